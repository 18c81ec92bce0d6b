"""``fxtrain program``: load a built bitstream onto a board over USB (openFPGALoader, or iceprog on iCE40).

Usage::

    fxtrain build --board icebreaker && fxtrain program --board icebreaker      # SRAM, lost at power-off
    fxtrain program --board ulx3s-85f --flash                                  # write the SPI flash instead

The programmer is looked up on ``PATH``: ``openFPGALoader`` (every board here; its board or cable arguments are in
:data:`LOADER_BOARDS`), else ``iceprog`` for the iCE40 boards. Neither is a Python package, so when none is
installed the command says which to install and exits with status 2. This command needs the board attached
and is not exercised by the tests.

Members
-------
LOADER_BOARDS : dict
    fxtrain board name to openFPGALoader's board (``-b``) or cable (``-c``) arguments.
programmer_command
    The command line that would program a bitstream (``FileNotFoundError`` when no programmer is installed).
add_arguments, run
    The sub-command.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from .build import BITSTREAM_SUFFIX, DEFAULT_NAME
from .targets import TARGETS, get_target

__all__ = ["LOADER_BOARDS", "programmer_command", "add_arguments", "run"]

LOADER_BOARDS = {
    "icebreaker": ("-b", "icebreaker"),
    "ulx3s-12f": ("-b", "ulx3s"),
    "ulx3s-25f": ("-b", "ulx3s"),
    "ulx3s-45f": ("-b", "ulx3s"),
    "ulx3s-85f": ("-b", "ulx3s"),
    "icesugar-pro": ("-c", "cmsisdap"),      # its DAPLink probe (JTAG over CMSIS-DAP)
}


def programmer_command(target, bitstream, flash=False):
    """The argument list that loads ``bitstream`` onto ``target`` (SRAM, or SPI flash with ``flash``)."""
    loader = shutil.which("openFPGALoader")
    if loader is not None:
        return [loader, *LOADER_BOARDS[target.name], *(["-f"] if flash else []), bitstream]
    iceprog = shutil.which("iceprog") if target.family == "ice40" else None
    if iceprog is not None:
        return [iceprog, *([] if flash else ["-S"]), bitstream]
    hint = "openFPGALoader or iceprog (apt install openfpgaloader / fpga-icestorm)" \
        if target.family == "ice40" else "openFPGALoader (apt install openfpgaloader)"
    raise FileNotFoundError(f"No FPGA programmer on PATH to load {bitstream} onto {target.name}; install {hint}")


def add_arguments(parser):
    parser.add_argument("--board", required=True, help=f"board: {', '.join(TARGETS)}")
    parser.add_argument("--bitstream", help="bitstream file (default: build/<board>/fxtrain_top.bin or .bit)")
    parser.add_argument("--flash", action="store_true", help="write the SPI flash instead of the SRAM")


def run(args):
    target = get_target(args.board)
    bitstream = args.bitstream or os.path.join("build", target.name,
                                               f"{DEFAULT_NAME}{BITSTREAM_SUFFIX[target.family]}")
    if not os.path.isfile(bitstream):
        raise FileNotFoundError(f"No bitstream at {bitstream}; run `fxtrain build --board {target.name}` first")
    command = programmer_command(target, bitstream, flash=args.flash)
    print("fxtrain program:", " ".join(command), flush=True)
    return subprocess.run(command).returncode
