"""``fxtrain.rtl`` — the accelerator's gateware, in Amaranth 0.5.

The hardware layer: every block is a ``wiring.Component`` whose docstring states its latency and exact arithmetic,
and every constant (formats, lane seeds, protocol codes, payload layouts, counter names) is imported from its
golden model in :mod:`fxtrain.sim`, so the RTL and the model cannot drift apart.

Main modules
------------
lfsr, rounder, pe
    LFSR lanes, the stochastic/nearest rounder, one multiply-accumulate processing element.
array, engine
    The output-stationary systolic array and the GEMM engine around it (operand memories, lanes, rounders,
    result banks, counters).
uart, crc, framing, command, soc
    The host link (UART or byte stream, CRC-16, frame codec, command executor) and the SoC top.

May import: ``amaranth``, ``numpy`` and :mod:`fxtrain.sim`. Never torch, :mod:`fxtrain.host` or
:mod:`fxtrain.boards` (``import fxtrain.rtl`` works with only the base dependencies installed).
"""
