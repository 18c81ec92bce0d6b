"""The ``fxtrain`` command line: one sub-command per module, each exposing ``add_arguments`` and ``run``.

Members
-------
SUBCOMMANDS : dict
    Sub-command name to ``(module, one-line help)``; a module provides ``add_arguments(parser)`` and
    ``run(args) -> int``.
main
    Entry point of the console script.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS = {
    "demo": ("fxtrain.host.demo", "show the arithmetic contract on a small GEMM (emulator)"),
    "train": ("fxtrain.host.train_cli", "train a CNN with its conv/linear GEMMs offloaded (emulator or device)"),
    "compare": ("fxtrain.host.compare_cli", "compare float32, fixed point and the approximate-training methods"),
    "estimate": ("fxtrain.host.estimate_cli", "predict the time per training epoch on a board by number format"),
    "build": ("fxtrain.boards.build_cli", "build a board bitstream (YoWASP toolchain); report resources and timing"),
    "program": ("fxtrain.boards.program_cli", "load a built bitstream onto a board (openFPGALoader or iceprog)"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="fxtrain", description="Fixed-point CNN training with stochastic "
                                     "rounding on open FPGAs, their RTL simulation, or a bit-exact emulator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["train" if "train" in SUBCOMMANDS else "demo"])
    try:
        return importlib.import_module(args._module).run(args) or 0
    except (ValueError, FileNotFoundError) as error:
        print(f"fxtrain {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
