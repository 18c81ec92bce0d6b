"""Build a board's bitstream with the YoWASP toolchain and report resources and timing.

Flow (Amaranth's Lattice platform scripts, run with the tools of :mod:`fxtrain.boards.toolchain`): the
design (:class:`fxtrain.boards.top.BoardTop`) is converted to RTLIL (a debug Verilog copy is written beside it),
synthesised by Yosys (``synth_ice40 -dsp`` on iCE40, so multipliers map to SB_MAC16; ``synth_ecp5``, which maps
them to MULT18X18D by default), placed and routed by nextpnr with ``--report <name>.report.json`` and packed
into a bitstream (``icepack`` / ``ecppack``).

The report combines nextpnr's JSON report (cells used of available, achieved vs constrained fmax per clock)
with Yosys' cell statistics (LUT and flip-flop counts before packing). A build *fails* — :class:`TimingError`
with the numbers — when any clock misses its constraint, and :class:`BuildError` when the DSP blocks used are
not exactly ``rows * cols`` (one multiplier per PE, so a multiplier that fell back to LUTs is an error).
Geometries with more PEs than the device has DSP blocks are refused before anything runs.

Members
-------
DEVICE_DSP_BLOCKS : dict
    FPGA part to its number of hardware multipliers (data sheet; nextpnr's report confirms it in each build).
PE_ONLY_DSP_SCRIPT : str
    Yosys commands that keep every multiplier outside the PEs out of the DSP blocks.
KEEP_FANOUT_SCRIPT : str
    Yosys command that marks the registers of the array's ``fanout_*`` submodules (replicated copies of a
    control signal) ``keep``.
CELL_NAMES : dict
    Family to the nextpnr cell types reported as logic cells, flip-flops, DSP and block RAM.
BuildError
    A tool failed, or the DSP mapping is not one block per PE.
TimingError
    The design does not meet its clock constraint; carries the report.
BuildReport
    Everything measured in one build (JSON-serialisable via :meth:`BuildReport.to_dict`).
check_fits
    Refuse a geometry the device cannot hold with one DSP block per PE.
parse_nextpnr_report, parse_critical_paths, parse_yosys_stats
    Readers of the tool outputs.
build_bitstream
    The whole flow for a :class:`~fxtrain.boards.targets.BoardTarget`.
check_report
    The pass/fail verdict on a report (bitstream, DSP count, timing).
format_report
    Human-readable table of a :class:`BuildReport`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field

from ..rtl.array import FANOUT_PREFIX, PE_PREFIX
from ..rtl.engine import ARRAY_NAME
from .targets import BoardTarget
from .toolchain import toolchain_env

__all__ = ["DEVICE_DSP_BLOCKS", "CELL_NAMES", "PE_ONLY_DSP_SCRIPT", "KEEP_FANOUT_SCRIPT", "BITSTREAM_SUFFIX", "DEFAULT_NAME",
           "BuildError", "TimingError", "BuildReport", "check_fits",
           "parse_nextpnr_report", "parse_critical_paths", "parse_yosys_stats", "build_bitstream", "check_report", "format_report"]

# iCE40 UltraPlus data sheet FPGA-DS-02008 table 1.1; ECP5 data sheet FPGA-DS-02012 table 1.1 (18x18 multipliers).
DEVICE_DSP_BLOCKS = {
    "iCE40UP5K": 8,
    "LFE5U-12F": 28,
    "LFE5U-25F": 28,
    "LFE5U-45F": 72,
    "LFE5U-85F": 156,
}

CELL_NAMES = {
    "ice40": {"logic": "ICESTORM_LC", "dsp": "ICESTORM_DSP", "bram": "ICESTORM_RAM", "ff": None,
              "spram": "ICESTORM_SPRAM"},
    "ecp5": {"logic": "TRELLIS_COMB", "dsp": "MULT18X18D", "bram": "DP16KD", "ff": "TRELLIS_FF", "spram": None},
}

DEFAULT_NAME = "fxtrain_top"

# icepack writes <name>.bin, ecppack <name>.bit (Amaranth's Lattice build scripts).
BITSTREAM_SUFFIX = {"ice40": ".bin", "ecp5": ".bit"}

# Yosys commands run right after reading the design: every multiplier outside the PEs (the array instantiates
# them as ``pe_<r>_<c>``) is expanded to logic, so DSP blocks go to the PEs only and a build uses exactly
# ``rows * cols`` of them (the link's command executor has a small counter-times-constant length check that
# would otherwise take a DSP block, leaving too few for the iCEBreaker's 2 x 4 array).
PE_ONLY_DSP_SCRIPT = f"techmap -map +/techmap.v t:$mul *.{ARRAY_NAME}.{PE_PREFIX}*/t:$mul %d"

# The systolic array drives its drain-shift control through one register per row and one per PE, in its
# ``fanout_shift_<r>`` submodules (``rtl/array.py``), so that no net reaches every PE. Copies with the same
# input are merged back into one register by Yosys' opt_merge unless the flip-flop cell itself carries
# ``keep``: this marks every ``$dff`` of those submodules.
KEEP_FANOUT_SCRIPT = f"setattr -set keep 1 *.{ARRAY_NAME}.{FANOUT_PREFIX}*/t:$dff"


# Amaranth's BuildPlan.extract writes the files after os.chdir(root), which is process-wide: two builds
# extracting at the same time from different threads (tests/test_boards.py builds two boards concurrently)
# would write each other's files into the wrong directory. Extraction is serialised.
_EXTRACT_LOCK = threading.Lock()


class BuildError(RuntimeError):
    """A tool of the flow failed (the message ends with the tail of its log), or the DSP mapping is wrong."""


class TimingError(BuildError):
    """The routed design misses a clock constraint.

    Members
    -------
    report : BuildReport
        The full report of the failed build (bitstream written nonetheless).
    """

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclass
class BuildReport:
    """Measurements of one build.

    Members
    -------
    board, device : str
    rows, cols, wl, depth, max_k_log2, b_depth : int
        Engine configuration built.
    clk_freq, baud : int
        ``sync`` (engine) clock in Hz and UART baud rate (what the SoC's IDENTIFY reports).
    uart_freq : int
        ``uart`` domain clock in Hz.
    pll : dict or None
        PLL dividers (``None``: the oscillator clocks ``sync`` directly).
    resources : dict
        ``{"logic"|"ff"|"dsp"|"bram"|"spram": {"cell": str, "used": int, "available": int}}`` from nextpnr
        (``spram`` on iCE40 only).
    yosys_cells : dict
        ``{"lut": int, "ff": int}`` counted by Yosys after synthesis.
    clocks : dict
        ``{net: {"achieved_mhz": float, "required_mhz": float}}`` from nextpnr: one entry per constrained clock
        net (:attr:`domain_clocks` tells which is the engine's and which the UART's).
    timing_met : bool
        Every clock's achieved fmax is at least its constraint.
    dsp_expected : int
        ``rows * cols``.
    build_seconds : float
        Wall time of synthesis, place and route and packing.
    bitstream : str
        Path of the bitstream file.
    identity : dict
        The IDENTIFY payload of the built SoC (:class:`fxtrain.sim.protocol.Identity` fields).
    critical_paths : list
        nextpnr's critical path per clock (:func:`parse_critical_paths`).
    router : str or None
        nextpnr router used (``None``: nextpnr's default).
    """

    board: str
    device: str
    rows: int
    cols: int
    wl: int
    depth: int
    max_k_log2: int
    clk_freq: int
    baud: int
    pll: dict | None
    uart_freq: int = 0
    resources: dict = field(default_factory=dict)
    yosys_cells: dict = field(default_factory=dict)
    clocks: dict = field(default_factory=dict)
    timing_met: bool = False
    dsp_expected: int = 0
    build_seconds: float = 0.0
    bitstream: str = ""
    identity: dict = field(default_factory=dict)
    critical_paths: list = field(default_factory=list)
    router: str | None = None
    b_depth: int = 0

    @property
    def fmax_mhz(self):
        """Smallest achieved fmax over the clocks (MHz)."""
        return min(c["achieved_mhz"] for c in self.clocks.values())

    @property
    def domain_clocks(self):
        """``{"sync"|"uart": clocks entry}``: the nextpnr clock of each domain, found by its constraint (nextpnr
        renames the clock nets, e.g. ``$glbnet$clk``); a domain is left out when no constrained clock, or more
        than one, has its frequency. One entry serves both domains when their clocks are the same."""
        out = {}
        for domain, freq in (("sync", self.clk_freq), ("uart", self.uart_freq)):
            nets = [net for net, c in self.clocks.items() if abs(c["required_mhz"] - freq / 1e6) <= 1e-4 * freq / 1e6]
            if len(nets) == 1:
                out[domain] = self.clocks[nets[0]]
        return out

    @property
    def dsp_used(self):
        return self.resources["dsp"]["used"]

    def to_dict(self):
        return asdict(self)


def check_fits(target):
    """Raise ``ValueError`` when ``target``'s geometry needs more DSP blocks than its device has."""
    if not isinstance(target, BoardTarget):
        raise TypeError(f"Target must be a BoardTarget, not {target!r}")
    available = DEVICE_DSP_BLOCKS.get(target.device)
    if available is None:
        raise ValueError(f"No DSP block count known for device {target.device!r} of board {target.name}")
    pes = target.config.rows * target.config.cols
    if pes > available:
        raise ValueError(f"A {target.config.rows} x {target.config.cols} array needs {pes} DSP blocks (one per PE) "
                         f"but the {target.device} on board {target.name} has {available}")


def parse_nextpnr_report(path, family):
    """``(resources, clocks)`` from a nextpnr ``--report`` JSON file (see :class:`BuildReport`)."""
    with open(path) as f:
        report = json.load(f)
    util = report.get("utilization", {})
    resources = {}
    for kind, cell in CELL_NAMES[family].items():
        if cell is None:
            continue
        entry = util.get(cell, {"used": 0, "available": 0})
        resources[kind] = {"cell": cell, "used": int(entry["used"]), "available": int(entry["available"])}
    clocks = {net: {"achieved_mhz": float(v["achieved"]), "required_mhz": float(v["constraint"])}
              for net, v in report.get("fmax", {}).items()}
    return resources, clocks


def parse_critical_paths(path):
    """Summaries of the critical paths in a nextpnr ``--report`` JSON file, one per clock pair.

    Each is ``{"clock": "posedge X -> posedge Y", "from": "cell.port", "to": "cell.port", "ns": total,
    "logic_ns": clock-to-out + cell + setup delays, "routing_ns": routing delays, "hops": [[type, "cell.port",
    ns], ...]}`` (a hop is the element of the path ending at that cell pin).
    """
    with open(path) as f:
        report = json.load(f)
    paths = []
    for entry in report.get("critical_paths", []):
        steps = entry.get("path", [])
        if not steps:
            continue
        pin = lambda end: f"{end['cell']}.{end['port']}"       # noqa: E731
        routing = sum(s["delay"] for s in steps if s["type"] == "routing")
        total = sum(s["delay"] for s in steps)
        paths.append({"clock": f"{entry.get('from', '?')} -> {entry.get('to', '?')}",
                      "from": pin(steps[0]["from"]), "to": pin(steps[-1]["to"]), "ns": round(total, 3),
                      "logic_ns": round(total - routing, 3), "routing_ns": round(routing, 3),
                      "hops": [[s["type"], pin(s["to"]), round(s["delay"], 3)] for s in steps]})
    return paths


_YOSYS_LUT = {"ice40": ("SB_LUT4",), "ecp5": ("LUT4",)}
_YOSYS_FF = {"ice40": re.compile(r"^SB_DFF\w*$"), "ecp5": re.compile(r"^TRELLIS_FF$")}


def parse_yosys_stats(path, family):
    """``{"lut": n, "ff": n}`` from the final cell statistics of a Yosys log (``<name>.rpt``).

    Reads the last ``stat`` output (its "design hierarchy" totals when present), up to the next pass header.
    """
    with open(path, errors="replace") as f:
        text = f.read()
    start = text.rfind("Printing statistics.")
    if start < 0:
        raise BuildError(f"No Yosys statistics in {path}")
    hierarchy = text.find("=== design hierarchy ===", start)
    section = text[start if hierarchy < 0 else hierarchy:]
    end = re.search(r"^\d+(\.\d+)*\. ", section, flags=re.M)
    if end is not None:
        section = section[:end.start()]
    counts = {"lut": 0, "ff": 0}
    # "     12   SB_LUT4" (newer Yosys: count first) or "     SB_LUT4    12" (older Yosys: count last).
    for line in section.splitlines():
        words = line.split()
        if len(words) != 2:
            continue
        if words[0].isdigit():
            count, cell = int(words[0]), words[1]
        elif words[1].isdigit():
            count, cell = int(words[1]), words[0]
        else:
            continue
        if cell in _YOSYS_LUT[family]:
            counts["lut"] += count
        elif _YOSYS_FF[family].match(cell):
            counts["ff"] += count
    return counts


def _run_script(build_dir, name, env, log_path):
    script = f"build_{name}.sh"
    with open(log_path, "w") as log:
        proc = subprocess.run(["sh", script], cwd=build_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-30:])
        raise BuildError(f"FPGA build failed (exit {proc.returncode}); log {log_path}, last lines:\n{tail}")


def build_bitstream(target, out_dir, *, name=DEFAULT_NAME, seed=1):
    """Build ``target``'s bitstream in ``out_dir`` and return its :class:`BuildReport`.

    Writes the bitstream (iCE40: ``<name>.bin`` from ``icepack``; ECP5: ``<name>.bit`` from ``ecppack``),
    ``<name>.report.json`` (nextpnr), ``build.log`` (all tool output), ``build_report.json``
    (:meth:`BuildReport.to_dict`) and ``build_report.txt`` (:func:`format_report`).

    Parameters
    ----------
    target : BoardTarget
    out_dir : str
        Build directory (created).
    name : str
        Base name of the design files.
    seed : int
        nextpnr placement seed.

    Raises
    ------
    ValueError
        The geometry does not fit the device, a clock the PLL cannot make, or a baud rate the bridge or the UART
        clock cannot make.
    ToolchainError
        A YoWASP tool is missing (names the PyPI package).
    BuildError
        A tool failed, or DSP blocks used != ``rows * cols``.
    TimingError
        Timing not met (raised after every report file is written; carries the report).
    """
    from .top import BoardTop

    check_fits(target)
    top = BoardTop(target)                      # validates PLL, UART divisor and configuration up front
    env = toolchain_env(target.family)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)

    nextpnr_opts = [f"--report {name}.report.json", "--timing-allow-fail", f"--seed {int(seed)}"]
    if target.router is not None:
        nextpnr_opts.append(f"--router {target.router}")
    overrides = {"nextpnr_opts": " ".join(nextpnr_opts),
                 "script_after_read": "\n".join([PE_ONLY_DSP_SCRIPT, KEEP_FANOUT_SCRIPT])}
    if target.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    platform = target.platform()
    plan = platform.build(top, name=name, build_dir=out_dir, do_build=False, **overrides)
    with _EXTRACT_LOCK:
        plan.extract(out_dir)
    started = time.monotonic()
    try:
        _run_script(out_dir, name, env, os.path.join(out_dir, "build.log"))
    except BuildError as error:
        rpt = os.path.join(out_dir, f"{name}.rpt")
        if "no BELs remaining" in str(error) or "Failed to expand region" in str(error):
            cells = parse_yosys_stats(rpt, target.family) if os.path.isfile(rpt) else {}
            raise BuildError(f"The design does not fit the {target.device} of board {target.name} "
                             f"({target.config.rows} x {target.config.cols} PEs, wl {target.config.wl}, "
                             f"max_k_log2 {target.config.max_k_log2}): Yosys counted {cells.get('lut', '?')} "
                             f"LUT4 and {cells.get('ff', '?')} flip-flops; {error}") from None
        raise
    seconds = time.monotonic() - started

    resources, clocks = parse_nextpnr_report(os.path.join(out_dir, f"{name}.report.json"), target.family)
    yosys_cells = parse_yosys_stats(os.path.join(out_dir, f"{name}.rpt"), target.family)
    if "ff" not in resources:
        resources["ff"] = {"cell": "SB_DFF*", "used": yosys_cells["ff"],
                           "available": resources["logic"]["available"]}
    config = target.config
    report = BuildReport(
        board=target.name, device=target.device, rows=config.rows, cols=config.cols, wl=config.wl,
        depth=config.depth, max_k_log2=config.max_k_log2, clk_freq=target.clk_freq, baud=target.baud,
        pll=None if top.pll is None else asdict(top.pll), uart_freq=target.uart_freq,
        resources=resources, yosys_cells=yosys_cells, clocks=clocks,
        timing_met=bool(clocks) and all(c["achieved_mhz"] >= c["required_mhz"] for c in clocks.values()),
        dsp_expected=config.rows * config.cols, build_seconds=round(seconds, 1),
        bitstream=os.path.join(out_dir, f"{name}{BITSTREAM_SUFFIX[target.family]}"),
        identity=asdict(top.identity),
        critical_paths=parse_critical_paths(os.path.join(out_dir, f"{name}.report.json")), router=target.router,
        b_depth=config.b_depth)
    with open(os.path.join(out_dir, "build_report.json"), "w") as f:
        json.dump(report.to_dict(), f, indent=2)
    with open(os.path.join(out_dir, "build_report.txt"), "w") as f:
        f.write(format_report(report) + "\n")

    check_report(report)
    return report


def check_report(report):
    """Raise unless ``report`` describes a usable bitstream.

    Raises
    ------
    BuildError
        No bitstream file, no constrained clock in the timing report, or DSP blocks used != ``rows * cols``.
    TimingError
        A clock's achieved fmax is below its constraint (the message gives both numbers for each such clock).
    """
    if not os.path.isfile(report.bitstream):
        raise BuildError(f"The flow finished but wrote no bitstream at {report.bitstream}")
    if not report.clocks:
        raise BuildError(f"nextpnr reported no constrained clock for {report.board}; timing was not checked")
    if report.dsp_used != report.dsp_expected:
        raise BuildError(f"{report.board}: {report.dsp_used} DSP blocks used, expected {report.dsp_expected} "
                         f"(one per PE of the {report.rows} x {report.cols} array)")
    misses = [f"{net}: {c['achieved_mhz']:.2f} MHz achieved < {c['required_mhz']:.2f} MHz required"
              for net, c in report.clocks.items() if c["achieved_mhz"] < c["required_mhz"]]
    if misses:
        raise TimingError(f"{report.board}: timing not met ({'; '.join(misses)})", report)


def format_report(report):
    """A plain-text table of a :class:`BuildReport`."""
    lines = [f"board {report.board} ({report.device}): {report.rows} x {report.cols} PEs, wl {report.wl}, "
             f"depth {report.depth}, B depth {report.b_depth}, engine clock {report.clk_freq / 1e6:g} MHz, UART "
             f"clock {report.uart_freq / 1e6:g} MHz, {report.baud} baud",
             f"{'resource':<10} {'cell':<14} {'used':>7} {'available':>10} {'%':>6}"]
    for kind in ("logic", "ff", "dsp", "bram", "spram"):
        r = report.resources.get(kind)
        if r is None:
            continue
        pct = 100.0 * r["used"] / r["available"] if r["available"] else 0.0
        lines.append(f"{kind:<10} {r['cell']:<14} {r['used']:>7} {r['available']:>10} {pct:>5.1f}%")
    lines.append(f"yosys: {report.yosys_cells.get('lut', 0)} LUT4, {report.yosys_cells.get('ff', 0)} FF")
    domains = {}
    for name, c in report.domain_clocks.items():
        domains[id(c)] = f"{domains[id(c)]} and {name}" if id(c) in domains else name
    for net, c in report.clocks.items():
        verdict = "met" if c["achieved_mhz"] >= c["required_mhz"] else "MISSED"
        where = f" ({domains[id(c)]} domain)" if id(c) in domains else ""
        lines.append(f"clock {net}{where}: fmax {c['achieved_mhz']:.2f} MHz, required {c['required_mhz']:.2f} MHz "
                     f"({verdict})")
    for p in report.critical_paths:
        lines.append(f"critical path ({p['clock']}): {p['from']} -> {p['to']}, {p['ns']:.2f} ns "
                     f"({p['logic_ns']:.2f} ns logic, {p['routing_ns']:.2f} ns routing)")
    lines.append(f"DSP blocks: {report.resources.get('dsp', {}).get('used', 0)} used, {report.dsp_expected} "
                 f"expected (rows x cols); build {report.build_seconds:.1f} s; bitstream {report.bitstream}")
    return "\n".join(lines)
