"""The ``fxtrain`` command line: one sub-command per module, each exposing ``add_arguments`` and ``run``.

``fxtrain`` alone prints the help. A sub-command whose module needs a package that is not installed (torch for
``train``: the ``[train]`` extra) is still listed, and running it says which extra to install. Bad input and the
errors of a device (``ValueError``, ``FileNotFoundError``, ``TransportError`` for a port or simulator that cannot
be opened, ``DeviceError`` for a board that does not answer, a missing extra) are reported as one line on stderr
with exit status 2, never a traceback.

Members
-------
SUBCOMMANDS : dict
    Sub-command name to ``(module, one-line help)``; a module provides ``add_arguments(parser)`` and
    ``run(args) -> int``.
EXTRAS : dict
    Third-party module to the extra that installs it (for the error message).
main
    Entry point of the console script.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["SUBCOMMANDS", "EXTRAS", "main"]

SUBCOMMANDS = {
    "demo": ("fxtrain.host.demo", "show the arithmetic contract on a small GEMM (emulator)"),
    "train": ("fxtrain.host.train_cli", "train a CNN with its conv/linear GEMMs offloaded (emulator or device)"),
    "sweep": ("fxtrain.host.sweep_cli", "many training runs over options and seeds on Ray Tune, ASHA early stopping"),
    "estimate": ("fxtrain.host.estimate_cli", "predict the time per training epoch on a board by number format"),
    "build": ("fxtrain.boards.build_cli", "build a board bitstream (YoWASP toolchain); report resources and timing"),
    "program": ("fxtrain.boards.program_cli", "load a built bitstream onto a board (openFPGALoader or iceprog)"),
}


EXTRAS = {"torch": "train", "matplotlib": "train", "tqdm": "train", "tensorboard": "tensorboard", "cocotb": "sim",
          "serial": "boards"}


def _missing_extra(error: ModuleNotFoundError) -> str:
    top = (error.name or "").partition(".")[0]
    extra = EXTRAS.get(top)
    hint = f"pip install 'fxtrain[{extra}]'" if extra else f"install the Python package {top!r}"
    return f"needs the Python package {top!r}, which is not installed: {hint}"


def _is_missing_dependency(error: BaseException) -> bool:
    return isinstance(error, ModuleNotFoundError) and (error.name or "fxtrain").partition(".")[0] != "fxtrain"


def _user_errors():
    """The exception types reported as one line (imported here: the transports need neither torch nor pyserial)."""
    from .device import DeviceError
    from .transport import TransportError

    return ValueError, FileNotFoundError, TransportError, DeviceError


def build_parser():
    parser = argparse.ArgumentParser(prog="fxtrain", description="Fixed-point CNN training with stochastic "
                                     "rounding on open FPGAs, their RTL simulation, or a bit-exact emulator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module, _missing=None)
        try:
            importlib.import_module(module).add_arguments(sub_parser)
        except ModuleNotFoundError as error:
            if not _is_missing_dependency(error):
                raise
            sub_parser.set_defaults(_missing=_missing_extra(error))
    return parser


def main(argv=None):
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_missing", None):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 0
    if args._missing:
        print(f"fxtrain {args.command}: error: {args._missing}", file=sys.stderr)
        return 2
    try:
        return importlib.import_module(args._module).run(args) or 0
    except Exception as error:
        if _is_missing_dependency(error):
            message = _missing_extra(error)
        elif isinstance(error, _user_errors()):
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        else:
            raise
        print(f"fxtrain {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
