"""``fxtrain.sim`` — the specification: bit-exact golden models and the simulator runners.

Every fact the other layers share is written once here (``docs/numerics.md`` is the prose contract): the
fixed-point format, the rounder, the LFSR lanes, the PE, the tiled GEMM, the engine's command-level model and
cycle counts, and the host-link protocol. The RTL, the host driver, the emulators and the time model import them.

Main modules
------------
fixedpoint, rounding, lfsr, pe, pe_model
    ``<WL, FL>`` formats, :class:`~fxtrain.sim.rounding.RoundingMode` (the one rounding-mode type of the
    project), lane sequences, the MAC arithmetic and its cycle model.
gemm, engine
    :class:`~fxtrain.sim.gemm.EngineConfig`, :class:`~fxtrain.sim.gemm.GemmResult` (the one GEMM result type
    of every backend) and the tiled GEMM; the engine's command-level model.
protocol
    Frames, CRC, commands, payload layouts and a device-side protocol emulator.
randomness
    Statistical acceptance checks of lane words and stochastic rounding.
runner, benches
    Build Amaranth components to Verilog and run the cocotb benches (:mod:`fxtrain.sim.benches`) on Verilator
    or Icarus.

May import: ``numpy`` and, in ``runner``/``benches`` only, ``amaranth``, ``cocotb`` and :mod:`fxtrain.rtl`.
Never torch or :mod:`fxtrain.host`.
"""
