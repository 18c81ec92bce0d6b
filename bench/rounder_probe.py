"""Timing of one rounder alone on an ECP5 part: nextpnr fmax with ``shift_setup`` 0 and 1.

Usage::

    python bench/rounder_probe.py --board ulx3s-45f --out /tmp/rounder_probe

The probe design is one :class:`fxtrain.rtl.rounder.StochasticRounder` at the engine's parameters (``wl`` 16,
52-bit accumulator, ``shift_max`` 32) whose inputs (``acc``, ``rand``, ``shift``, ``mode``, ``i_valid``) are
registers loaded from a 96-bit LFSR and whose outputs fold into one LED, constrained at 400 MHz. It isolates the
rounder's own paths (a full SoC build reports only its one worst path per clock): with ``shift_setup = 0`` the
``shift`` register -> thermometer compare -> offset -> 54-bit add path, with ``shift_setup = 1`` (the engine's
choice) whatever is left. Prints one line per setting: the setting, fmax in MHz, the critical path's end points
and its logic / routing ns. Placement of a lone block is compact, so the figures are upper bounds for the SoC.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from amaranth.hdl import Elaboratable, Module, Signal, signed
from amaranth.lib import io

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from boards import _Constrained  # noqa: E402  (bench/boards.py, the DSP probe's constraint wrapper)

from fxtrain.boards.build import parse_critical_paths, parse_nextpnr_report  # noqa: E402
from fxtrain.boards.targets import get_target  # noqa: E402
from fxtrain.boards.toolchain import toolchain_env  # noqa: E402
from fxtrain.rtl.rounder import StochasticRounder  # noqa: E402


class RounderProbe(Elaboratable):
    """One rounder between LFSR-fed input registers and an LED (XOR of ``out``, ``sat`` and ``o_valid``)."""

    def __init__(self, shift_setup):
        self.shift_setup = shift_setup

    def elaborate(self, platform):
        m = Module()
        lfsr = Signal(96, init=1)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[-1] ^ lfsr[-3] ^ lfsr[-4] ^ lfsr[-6]))
        m.submodules.rounder = r = StochasticRounder(16, 52, shift_setup=self.shift_setup)
        shift, mode, acc, rand, valid = Signal(6), Signal(), Signal(signed(52)), Signal(32), Signal()
        m.d.sync += [shift.eq(lfsr[:6]), mode.eq(lfsr[6]), acc.eq(lfsr[7:59]), rand.eq(lfsr[59:91]),
                     valid.eq(lfsr[91])]
        m.d.comb += [r.shift.eq(shift), r.mode.eq(mode), r.acc.eq(acc), r.rand.eq(rand), r.i_valid.eq(valid)]
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(r.out.xor() ^ r.sat ^ r.o_valid)
        return m


def probe(target, shift_setup, out_dir):
    """Place and route the probe; returns ``(fmax MHz, critical path dict or None)``."""
    plan = target.platform().build(_Constrained(RounderProbe(shift_setup), 400e6), name="probe", build_dir=out_dir,
                                   do_build=False,
                                   nextpnr_opts="--report probe.report.json --timing-allow-fail --seed 1")
    plan.extract(out_dir)
    with open(os.path.join(out_dir, "probe.log"), "w") as log:
        subprocess.run(["sh", "build_probe.sh"], cwd=out_dir, env=toolchain_env(target.family), stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    report = os.path.join(out_dir, "probe.report.json")
    _, clocks = parse_nextpnr_report(report, target.family)
    paths = [p for p in parse_critical_paths(report) if "design.clk" in p["clock"].split(" -> ")[0]]
    return min(c["achieved_mhz"] for c in clocks.values()), (paths[0] if paths else None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="ulx3s-45f", help="an ECP5 board name (default ulx3s-45f)")
    parser.add_argument("--out", default="build/rounder_probe", help="build directory")
    args = parser.parse_args(argv)
    target = get_target(args.board)
    if target.family != "ecp5":
        parser.error(f"--board must be an ECP5 board, not {args.board!r} ({target.family})")
    for shift_setup in (0, 1):
        fmax, path = probe(target, shift_setup, os.path.join(args.out, f"shift_setup{shift_setup}"))
        where = (f"{path['from']} -> {path['to']}: {path['ns']:.2f} ns ({path['logic_ns']:.2f} logic / "
                 f"{path['routing_ns']:.2f} routing)") if path else "-"
        print(f"{target.device} shift_setup={shift_setup}: fmax {fmax:.2f} MHz; critical path {where}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
