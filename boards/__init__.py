"""``fxtrain.boards`` — board targets and bitstream builds with the YoWASP (Yosys + nextpnr) toolchain.

Main modules
------------
targets
    The supported boards (iCEBreaker, ULX3S 12F…85F, iCESugar-Pro): platform, default engine geometry,
    clocking and host-link baud rate.
top
    The board top level: clock domain (oscillator or PLL) and the SoC on the UART pins.
toolchain, build
    Find the YoWASP tools; build a bitstream and report resources and timing.
build_cli, program_cli
    ``fxtrain build`` and ``fxtrain program``.

May import: ``amaranth``, ``amaranth-boards``, :mod:`fxtrain.rtl` and :mod:`fxtrain.sim`; the YoWASP tools come
with the ``[boards]`` extra. Never torch or :mod:`fxtrain.host` (``fxtrain build --list`` works without torch).
"""
