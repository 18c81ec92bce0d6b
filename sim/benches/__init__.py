"""``fxtrain.sim.benches`` — cocotb testbenches that play golden-model scenarios on the generated Verilog.

Each bench module holds a simulator-independent scenario (stimulus and expected outputs from :mod:`fxtrain.sim`)
and the ``@cocotb.test`` coroutines that drive it; :mod:`fxtrain.sim.runner` builds the design and runs them under
Verilator or Icarus, and ``tests/`` calls the runner from pytest.

Main modules
------------
drivers
    Clock/reset and ``lib.stream`` sources and sinks with seeded random stalls, shared by all benches.
block_checks, lfsr_bench, rounder_bench, pe_bench
    The LFSR, rounder and PE blocks, cycle by cycle.
engine_bench, link_bench, soc_server
    The GEMM engine, the UART/byte-stream link, and the whole SoC served on a TCP socket for the host driver.

May import: ``cocotb``, ``numpy``, :mod:`fxtrain.sim` and :mod:`fxtrain.rtl`. Never torch or :mod:`fxtrain.host`.
"""
