"""Engine test scenario (pure Python) and the cocotb bench that plays it on ``GemmEngine`` Verilog.

:func:`engine_scenario` builds a seeded list of host commands that covers every kind of run (K = 1, K = depth,
K-split chains, all-extreme operands saturating both ways, shift 0 and 32, both modes, clear=0 after a drain,
rejected runs, seed reloads); :func:`expected_outputs` plays it on :class:`fxtrain.sim.engine.EngineModel`.
The same scenario drives the Amaranth-simulator test (``tests/test_engine_rtl.py``) and this cocotb bench
(``tests/test_engine_cocotb.py``), which adds seeded random ``valid``/``ready`` stalls on every stream.

Scenario commands (tuples):
``("seed", lane, value)``, ``("write_a", addr, entry)``, ``("write_b", addr, entry)`` (one entry: a list of raw
words), ``("run", a_base, b_base, k, clear, drain, shift, mode)``, ``("clear_counters",)``.

Bench parameters (:func:`fxtrain.sim.runner.bench_params`): ``rows, cols, wl, depth, max_k_log2`` (the
``EngineConfig``), ``seed`` (scenario and stall seed), ``runs`` (random runs in the scenario),
``stall_probability`` (chance that a source drops ``valid`` / the sink drops ``ready`` in a cycle).

Members
-------
engine_scenario
    The command list.
expected_outputs
    Model results, run cycles and final counters of a command list.
"""

from __future__ import annotations

import random

from ..engine import EngineModel, run_is_valid
from ..gemm import EngineConfig
from ..lfsr import lane_seeds

__all__ = ["engine_scenario", "expected_outputs"]


def engine_scenario(config, seed, runs=8):
    """A seeded list of host commands exercising the engine (module docstring)."""
    rng = random.Random(seed)
    rows, cols, depth, wl = config.rows, config.cols, config.depth, config.wl
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    ops = [("seed", j, s) for j, s in enumerate(lane_seeds(seed, cols))]

    def fill(which, base, k, values=None):
        width = rows if which == "write_a" else cols
        for i in range(k):
            entry = [rng.randint(lo, hi) if values is None else values for _ in range(width)]
            ops.append((which, base + i, entry))

    def run(a_base, b_base, k, clear, drain, shift=None, mode=None):
        shift = rng.randint(0, 32) if shift is None else shift
        mode = rng.randint(0, 1) if mode is None else mode
        ops.append(("run", a_base, b_base, k, clear, drain, shift, mode))

    # K = 1, nearest and stochastic
    fill("write_a", depth - 1, 1)
    fill("write_b", depth // 2, 1)
    run(depth - 1, depth // 2, 1, 1, 1, shift=2, mode=0)
    run(depth - 1, depth // 2, 1, 1, 1, shift=2, mode=1)
    # K = depth, the whole memory
    fill("write_a", 0, depth)
    fill("write_b", 0, depth)
    run(0, 0, depth, 1, 1, shift=wl, mode=1)
    run(0, 0, depth, 1, 1, shift=wl, mode=0)
    # K-split chain over three address ranges: (1,0), (0,0), (0,1); partial sums never rounded
    third = max(1, depth // 3)
    run(0, 0, third, 1, 0)
    run(third, third, third, 0, 0)
    run(2 * third, 2 * third, depth - 2 * third, 0, 1, shift=wl - 1, mode=1)
    # after a drain the accumulators are 0: clear=0 starts from zero
    run(1, 2, 2, 0, 1, shift=0, mode=0)
    # rejected runs: k = 0, k > depth, base + k > depth (nothing computed, no lane advance)
    run(0, 0, 0, 1, 1)
    run(0, 0, depth + 1, 1, 1)
    run(depth - 1, 0, 2, 1, 1)
    run(0, depth - 1, 2, 1, 1)
    # all-extreme operands, saturating high (min*min) and low (min*max), shift 0 and 32
    fill("write_a", 0, 2, lo)
    fill("write_b", 0, 2, lo)
    fill("write_b", 2, 2, hi)
    run(0, 0, 2, 1, 1, shift=0, mode=0)
    run(0, 2, 2, 1, 1, shift=0, mode=1)
    run(0, 0, 2, 1, 1, shift=32, mode=1)
    run(0, 2, 2, 1, 1, shift=32, mode=0)
    ops.append(("clear_counters",))
    # reseed one lane, then random runs of every length over random, possibly resident, operands
    ops.append(("seed", cols - 1, rng.randint(1, (1 << 32) - 1)))
    for _ in range(runs):
        k = rng.randint(1, depth)
        a_base, b_base = rng.randint(0, depth - k), rng.randint(0, depth - k)
        if rng.random() < 0.7:
            fill("write_a", a_base, k)
        if rng.random() < 0.7:
            fill("write_b", b_base, k)
        run(a_base, b_base, k, rng.randint(0, 1), rng.random() < 0.7)
    run(0, 0, 1, 0, 1)
    return ops


def expected_outputs(config, ops):
    """Play ``ops`` on the model: ``(tiles, cycles, counters, error)``.

    ``tiles`` lists ``(out, sat)`` per drained tile (rows x cols nested lists), ``cycles`` the cycles of each
    run command in order, ``counters`` the model counters after the last command, ``error`` its error flag.
    """
    if not isinstance(config, EngineConfig):
        raise TypeError(f"Engine configuration must be an EngineConfig, not {config!r}")
    model = EngineModel(config)
    cycles = []
    for op in ops:
        if op[0] == "seed":
            model.set_seed(op[1], op[2])
        elif op[0] == "write_a":
            model.write_a(op[1], [op[2]])
        elif op[0] == "write_b":
            model.write_b(op[1], [op[2]])
        elif op[0] == "run":
            cycles.append(model.run(*op[1:]))
        elif op[0] == "clear_counters":
            model.clear_counters()
        else:
            raise ValueError(f"Unknown scenario command {op!r}")
    tiles = [(out.tolist(), sat.tolist()) for out, sat in model.results]
    return tiles, cycles, dict(model.counters), model.error


def run_valid(config, op):
    """Whether a ``("run", ...)`` command is executed (not rejected)."""
    return run_is_valid(config, op[1], op[2], op[3])
