"""Per-board build benchmark: geometry, fmax, peak GMAC/s, ratio to the DSP limit, build time.

Usage::

    python bench/boards.py                                      # icebreaker and ulx3s-12f defaults
    python bench/boards.py --board ulx3s-85f:12x12@100          # name[:ROWSxCOLS][@MHZ][/router1|/router2]
    python bench/boards.py --board icebreaker --board ulx3s-12f --json bench/results/boards.json

For each board spec it runs the whole flow (:func:`fxtrain.boards.build.build_bitstream`, the same as
``fxtrain build``) and records:

* geometry, required clock, achieved fmax (nextpnr), whether timing closed, DSP blocks used/available, logic
  cells used/available, Yosys LUT4 count, flip-flops, block RAMs used/available, the critical path (start and
  end pins, logic and routing ns), wall time of synthesis + place and route + packing on this machine;
* peak throughput ``rows * cols * clock`` in GMAC/s, at the required clock when timing closed, otherwise at
  the achieved fmax (marked);
* the board's DSP limit ``DSP blocks * f_DSP``: every hardware multiplier of the device busy at the DSP
  block's own maximum frequency ``f_DSP``, and the ratio of the peak to it.

``f_DSP`` is measured in the same run, with the same tools and timing model: a probe design of one
multiplier with registered operands and registered product (``DSPProbe``, a register-to-register path through
one DSP block and nothing else) is placed and routed on the same device, and its nextpnr fmax is ``f_DSP``.
(The Lattice data sheets' DSP tables could not be consulted from the machine that wrote this; the probe makes
the ratio self-consistent: numerator and denominator come from one timing model.)

Results go to a JSON file and to a Markdown table on stdout (paste into ``docs/boards.md`` with the command).

Members
-------
DSPProbe
    The probe design.
parse_spec
    ``"name[:RxC][@MHZ]"`` to a :class:`~fxtrain.boards.targets.BoardTarget`.
probe_dsp_fmax
    Build the probe for a target's device and return its fmax in MHz.
bench_board
    Build one target and return its result row.
main
    Command line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from amaranth.hdl import Elaboratable, Module, Signal, signed
from amaranth.lib import io

from fxtrain.boards.build import (DEVICE_DSP_BLOCKS, BuildError, TimingError, build_bitstream,
                                  parse_nextpnr_report)
from fxtrain.boards.build_cli import clock_hz
from fxtrain.boards.targets import get_target
from fxtrain.boards.toolchain import toolchain_env

DEFAULT_SPECS = ("icebreaker", "ulx3s-12f")


class DSPProbe(Elaboratable):
    """One ``wl x wl`` signed multiplier between registers, fed by a 2*wl-bit LFSR and folded into one LED.

    Latency: 2 cycles from operand registers to the product register; arithmetic ``p <= a * b`` exactly
    (``2*wl`` bits). Only the product register's XOR reduction leaves the chip, so nothing is optimised away.
    """

    def __init__(self, wl=16):
        self.wl = wl

    def elaborate(self, platform):
        m = Module()
        wl = self.wl
        lfsr = Signal(2 * wl, init=1)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[-1] ^ lfsr[-3] ^ lfsr[-4] ^ lfsr[-6]))
        a, b = Signal(signed(wl)), Signal(signed(wl))
        p = Signal(signed(2 * wl))
        m.d.sync += [a.eq(lfsr[:wl]), b.eq(lfsr[wl:]), p.eq(a * b)]
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(p.xor())
        return m


def parse_spec(spec):
    """``"name[:RxC][@MHZ][/router2]"`` (e.g. ``ulx3s-85f:12x12@100/router2``) to a BoardTarget (the router
    suffix picks nextpnr's router); ``ValueError`` if malformed."""
    match = re.fullmatch(r"([\w-]+)(?::(\d+)x(\d+))?(?:@([\d.]+))?(?:/(router[12]))?", spec)
    if match is None:
        raise ValueError(f"Board spec must look like name[:ROWSxCOLS][@MHZ][/router1|/router2], not {spec!r}")
    name, rows, cols, mhz, router = match.groups()
    return get_target(name).with_options(rows=None if rows is None else int(rows),
                                         cols=None if cols is None else int(cols),
                                         clk_freq=None if mhz is None else clock_hz(mhz), router=router)


def probe_dsp_fmax(target, out_dir):
    """nextpnr fmax (MHz) of :class:`DSPProbe` on ``target``'s device, constrained at 500 MHz."""
    platform = target.platform()
    overrides = {"nextpnr_opts": "--report probe.report.json --timing-allow-fail --seed 1"}
    if target.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    top = DSPProbe()
    plan = platform.build(_Constrained(top, 500e6), name="probe", build_dir=out_dir, do_build=False,
                          **overrides)
    plan.extract(out_dir)
    with open(os.path.join(out_dir, "probe.log"), "w") as log:
        subprocess.run(["sh", "build_probe.sh"], cwd=out_dir, env=toolchain_env(target.family), stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    resources, clocks = parse_nextpnr_report(os.path.join(out_dir, "probe.report.json"), target.family)
    if resources["dsp"]["used"] != 1:
        raise BuildError(f"DSP probe on {target.device} used {resources['dsp']['used']} DSP blocks, not 1")
    return min(c["achieved_mhz"] for c in clocks.values())


class _Constrained(Elaboratable):
    """``design`` clocked by the board oscillator, with the sync clock constrained to ``freq`` Hz."""

    def __init__(self, design, freq):
        self.design, self.freq = design, freq

    def elaborate(self, platform):
        from amaranth.hdl import ClockDomain
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.submodules.clk = clk = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.d.comb += cd.clk.eq(clk.i)
        platform.add_clock_constraint(cd.clk, self.freq)
        m.submodules.design = self.design
        return m


def bench_board(spec, out_root):
    """Build ``spec`` (and its device's DSP probe) under ``out_root``; return the result row (dict)."""
    target = parse_spec(spec)
    out_dir = os.path.join(out_root, spec.replace(":", "_").replace("@", "_").replace("/", "_"))
    row = {"spec": spec, "board": target.name, "device": target.device, "rows": target.config.rows,
           "cols": target.config.cols, "required_mhz": target.clk_freq / 1e6,
           "dsp_available": DEVICE_DSP_BLOCKS[target.device], "router": target.router}
    started = time.monotonic()
    try:
        report = build_bitstream(target, out_dir)
        row["status"] = "ok"
    except TimingError as error:
        report = error.report
        row["status"] = "timing missed"
    except BuildError as error:
        row.update(status="failed", error=str(error).splitlines()[0][:300],
                   build_seconds=round(time.monotonic() - started, 1))
        return row
    fmax = report.domain_clocks.get("sync", {}).get("achieved_mhz", report.fmax_mhz)   # the engine's clock
    clock = target.clk_freq / 1e6 if report.timing_met else fmax
    f_dsp = probe_dsp_fmax(target, os.path.join(out_dir, "dsp_probe"))
    peak = target.config.rows * target.config.cols * clock / 1e3
    limit = DEVICE_DSP_BLOCKS[target.device] * f_dsp / 1e3
    row.update(fmax_mhz=round(fmax, 2), timing_met=report.timing_met, dsp_used=report.dsp_used,
               logic_used=report.resources["logic"]["used"], logic_available=report.resources["logic"]["available"],
               peak_gmacs=round(peak, 3), peak_at_mhz=round(clock, 2), f_dsp_mhz=round(f_dsp, 2),
               limit_gmacs=round(limit, 2), ratio=round(peak / limit, 4), build_seconds=report.build_seconds,
               luts=report.yosys_cells.get("lut"), ffs=report.resources["ff"]["used"],
               bram_used=report.resources["bram"]["used"], bram_available=report.resources["bram"]["available"],
               critical_path={k: v for k, v in report.critical_paths[0].items() if k != "hops"}
               if report.critical_paths else None)
    return row


def markdown(rows):
    lines = ["| board | device | geometry | required MHz | fmax MHz | timing | DSP used/avail | logic used/avail | "
             "peak GMAC/s | f_DSP MHz | DSP limit GMAC/s | ratio | build s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "failed":
            lines.append(f"| {r['board']} | {r['device']} | {r['rows']}x{r['cols']} | {r['required_mhz']:g} | - | "
                         f"build failed: {r['error']} | - | - | - | - | - | - | {r['build_seconds']} |")
            continue
        peak = f"{r['peak_gmacs']:.3f}" + ("" if r["timing_met"] else f" (at fmax {r['peak_at_mhz']:g})")
        lines.append(f"| {r['board']} | {r['device']} | {r['rows']}x{r['cols']} | {r['required_mhz']:g} | "
                     f"{r['fmax_mhz']:.2f} | {'met' if r['timing_met'] else 'MISSED'} | "
                     f"{r['dsp_used']}/{r['dsp_available']} | {r['logic_used']}/{r['logic_available']} | {peak} | "
                     f"{r['f_dsp_mhz']:.1f} | {r['limit_gmacs']:.2f} | {r['ratio']:.3f} | {r['build_seconds']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", action="append", help="name[:ROWSxCOLS][@MHZ]; repeatable "
                        f"(default: {' '.join(DEFAULT_SPECS)})")
    parser.add_argument("--out", default="build/bench", help="build root (default build/bench)")
    parser.add_argument("--json", default="bench/results/boards.json", help="results file (merged by spec)")
    args = parser.parse_args(argv)
    specs = args.board or list(DEFAULT_SPECS)
    for spec in specs:
        parse_spec(spec)                        # fail on a bad spec before any build
    results = {}
    if os.path.isfile(args.json):
        with open(args.json) as f:
            results = {r["spec"]: r for r in json.load(f)}
    for spec in specs:
        print(f"bench: building {spec} ...", flush=True)
        row = bench_board(spec, args.out)
        row["command"] = "python bench/boards.py " + " ".join(f"--board {s}" for s in specs)
        results[spec] = row
        print(json.dumps(row), flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(list(results.values()), f, indent=2)
    print(markdown(list(results.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
