"""``fxtrain build``: build a board's bitstream and print its resource and timing report.

Usage::

    fxtrain build --board icebreaker                       # default geometry and clock of the board
    fxtrain build --board ulx3s-85f --rows 12 --cols 12 --clock 100 --out build/ulx3s-85f
    fxtrain build --list                                   # the boards, their defaults, multipliers used/available

Exit status: 0 when the bitstream is written, timing is met and the DSP blocks used equal ``rows * cols``;
1 when the build ran but failed one of these (the report is printed and written nonetheless); 2 for bad
arguments (unknown board, a geometry that does not fit, a clock the PLL cannot make, a baud rate the board's
bridge or UART clock cannot make, a missing tool).

Members
-------
add_arguments
    Register the options on an ``argparse`` parser.
run
    Execute the command.
"""

from __future__ import annotations

import os
import sys

from .build import DEVICE_DSP_BLOCKS, BuildError, TimingError, build_bitstream, check_fits, format_report
from .targets import ROUTERS, TARGETS, get_target
from .top import clock_plan

__all__ = ["add_arguments", "run", "clock_hz"]


def clock_hz(mhz):
    """``mhz`` (MHz, float) as an integer number of Hz; ``ValueError`` unless it is a whole number of Hz."""
    hz = round(float(mhz) * 1e6)
    if hz <= 0 or abs(hz - float(mhz) * 1e6) > 1e-3:
        raise ValueError(f"Clock must be a positive whole number of Hz given in MHz, not {mhz!r}")
    return hz


def add_arguments(parser):
    parser.add_argument("--board", help=f"board to build for: {', '.join(TARGETS)}")
    parser.add_argument("--rows", type=int, help="array rows (default: the board's)")
    parser.add_argument("--cols", type=int, help="array columns (default: the board's)")
    parser.add_argument("--clock", type=float, metavar="MHZ", help="engine (sync) clock in MHz (default: the "
                        "board's; made by the PLL when it differs from the oscillator)")
    parser.add_argument("--uart-clock", type=float, metavar="MHZ", help="UART clock in MHz (default: the "
                        "board's; sets the UART divisor round(clock / baud))")
    parser.add_argument("--baud", type=int, help="UART baud rate (default: the board's; refused when the board's "
                        "USB-UART bridge or the UART clock cannot make it)")
    parser.add_argument("--depth", type=int, help="A operand buffer depth (default: the board's)")
    parser.add_argument("--b-depth", type=int, help="B operand buffer depth, where weights stay resident "
                        "(default: the board's; raised to --depth when that is larger)")
    parser.add_argument("--max-k-log2", type=int, metavar="N", help="largest K the accumulators hold exactly is "
                        "2**N (accumulator width 2*wl + N; default: the board's)")
    parser.add_argument("--expander", choices=["on", "off"], help="the EXPAND walker (convolution mode, "
                        "rtl/expander.py; default: the board's)")
    parser.add_argument("--out", metavar="DIR", help="build directory (default: build/<board>)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--router", choices=[r for r in ROUTERS if r], help="nextpnr router (default: the "
                        "board's, else nextpnr's)")
    parser.add_argument("--list", action="store_true", help="list the boards and their defaults, then exit")


def _list():
    print(f"{'board':<14} {'device':<12} {'rows x cols':>11} {'multipliers':>11} {'engine MHz':>10} "
          f"{'UART MHz':>8} {'baud':>9}  description")
    for t in TARGETS.values():
        used = f"{t.config.rows * t.config.cols}/{DEVICE_DSP_BLOCKS[t.device]}"
        print(f"{t.name:<14} {t.device:<12} {t.config.rows:>5} x {t.config.cols:<3} {used:>11} "
              f"{t.clk_freq / 1e6:>10g} {t.uart_freq / 1e6:>8g} {t.baud:>9}  {t.description}")


def run(args):
    if args.list:
        _list()
        return 0
    if args.board is None:
        raise ValueError(f"--board is required; known boards: {', '.join(TARGETS)}")
    target = get_target(args.board).with_options(
        rows=args.rows, cols=args.cols, clk_freq=None if args.clock is None else clock_hz(args.clock),
        baud=args.baud, depth=args.depth, router=args.router, b_depth=args.b_depth, max_k_log2=args.max_k_log2,
        uart_freq=None if args.uart_clock is None else clock_hz(args.uart_clock),
        expander=None if args.expander is None else args.expander == "on")
    check_fits(target)
    target.check_link()                         # a baud rate the bridge or the UART clock cannot make
    clock_plan(target)                          # a clock the PLL cannot make fails here, before the banner
    out_dir = args.out or os.path.join("build", target.name)
    print(f"fxtrain build: {target.name} ({target.device}), {target.config.rows} x {target.config.cols} PEs at "
          f"{target.clk_freq / 1e6:g} MHz, UART {target.baud} baud from {target.uart_freq / 1e6:g} MHz, in {out_dir}",
          flush=True)
    try:
        report = build_bitstream(target, out_dir, seed=args.seed)
    except TimingError as error:
        print(format_report(error.report))
        print(f"fxtrain build: error: {error}", file=sys.stderr)
        return 1
    except BuildError as error:
        print(f"fxtrain build: error: {error}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0
