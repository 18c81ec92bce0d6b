"""The command-level engine model (sim/engine.py): bit-exact with tiled_gemm, run semantics, cycles, counters."""

import numpy as np
import pytest

from fxtrain.sim.engine import (COUNTER_NAMES, OPERAND_LATENCY, ROUNDER_LATENCY, EngineModel, engine_layouts,
                                gemm_cycles, gemm_via_engine, run_cycles, run_is_valid)
from fxtrain.sim.gemm import EngineConfig, tiled_gemm
from fxtrain.sim.lfsr import lane_seeds
from fxtrain.sim.rounding import RoundingMode

MODES = [RoundingMode.NEAREST, RoundingMode.STOCHASTIC]


def _rand(rng, wl, shape):
    return rng.integers(-(1 << (wl - 1)), 1 << (wl - 1), shape)


@pytest.mark.parametrize("rows,cols,depth", [(1, 1, 2), (2, 4, 16), (4, 4, 8), (3, 2, 4)])
@pytest.mark.parametrize("mode", MODES)
def test_gemm_via_engine_equals_tiled_gemm(rows, cols, depth, mode):
    """§6: the canonical host tiling on the model gives tiled_gemm's outputs, flags and lane states, GEMM after
    GEMM (lanes persist), for shapes that pad M and N and split K into several chunks."""
    seed = rows * 100 + cols * 10 + depth + int(mode)
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    config = EngineConfig(rows=rows, cols=cols, wl=8, depth=depth, max_k_log2=10)
    model = EngineModel(config)
    model.set_seeds(lane_seeds(seed, cols))
    state = list(model.lane_state)
    for m, k, n, shift in [(5, 7, 3, 6), (1, 1, 1, 0), (rows, depth, cols, 10), (7, 3 * depth + 1, 9, 32),
                           (2, depth + 1, 5, 1)]:
        a, b = _rand(rng, 8, (m, k)), _rand(rng, 8, (k, n))
        want = tiled_gemm(config, a, b, shift, mode, state)
        got = gemm_via_engine(model, a, b, shift, mode)
        np.testing.assert_array_equal(got.c, want.c)
        np.testing.assert_array_equal(got.saturated, want.saturated)
        assert got.lane_state == want.lane_state
        state = want.lane_state
    assert not model.results


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_result_does_not_depend_on_k_chunking(chunk):
    """Partial sums are never rounded: any K chunk size gives the same GEMM (§6 step 1)."""
    rng = np.random.default_rng(chunk)
    config = EngineConfig(rows=2, cols=3, wl=6, depth=8, max_k_log2=8)
    a, b = _rand(rng, 6, (4, 29)), _rand(rng, 6, (29, 5))
    results = []
    for ch in (chunk, None):
        model = EngineModel(config)
        model.set_seeds(lane_seeds(7, 3))
        results.append(gemm_via_engine(model, a, b, 5, RoundingMode.STOCHASTIC, chunk=ch))
    np.testing.assert_array_equal(results[0].c, results[1].c)
    assert results[0].lane_state == results[1].lane_state


def test_extreme_operands_saturate_both_ways():
    """Most negative x most negative saturates high, most negative x most positive saturates low; s=0."""
    config = EngineConfig(rows=2, cols=2, wl=4, depth=4, max_k_log2=4)
    model = EngineModel(config)
    model.write_a(0, [[-8, -8], [-8, -8]])
    model.write_b(0, [[-8, 7], [-8, 7]])
    assert model.run(0, 0, 2, clear=1, drain=1, shift=0, mode=0) == run_cycles(config, 2, 1)
    out, sat = model.read_result()
    np.testing.assert_array_equal(out, [[7, -8], [7, -8]])
    assert sat.all()
    assert model.counters["saturated"] == 4


def test_clear_drain_semantics():
    """clear=0 keeps accumulating over runs; a drain leaves the accumulators at 0; clear=1 discards them."""
    config = EngineConfig(rows=1, cols=1, wl=8, depth=4, max_k_log2=8)
    model = EngineModel(config)
    model.write_a(0, [[3], [5]])
    model.write_b(0, [[2], [7]])
    model.run(0, 0, 1, clear=1, drain=0)      # 6
    model.run(1, 1, 1, clear=0, drain=1)      # 6 + 35
    assert model.read_result()[0][0, 0] == 41
    model.run(1, 1, 1, clear=0, drain=1)      # accumulators were 0 after the drain
    assert model.read_result()[0][0, 0] == 35
    model.run(0, 0, 2, clear=0, drain=0)
    model.run(0, 0, 1, clear=1, drain=1)      # clear discards the 41
    assert model.read_result()[0][0, 0] == 6


def test_accumulator_wraps_like_the_rtl_beyond_max_k():
    """More than max_k products (a host error) wrap in acc_width bits, as a two's complement register does."""
    config = EngineConfig(rows=1, cols=1, wl=2, depth=2, max_k_log2=1)      # acc_width = 5
    model = EngineModel(config)
    model.write_a(0, [[-2], [-2]])
    model.write_b(0, [[-2], [-2]])
    model.run(0, 0, 2, clear=1, drain=0)      # 8
    model.run(0, 0, 2, clear=0, drain=0)      # 16 wraps to -16 in 5 bits
    assert int(model.acc[0, 0]) == -16


@pytest.mark.parametrize("a_base,b_base,k", [(0, 0, 0), (0, 0, 5), (1, 0, 4), (0, 3, 2), (3, 3, 2)])
def test_invalid_runs_are_rejected_not_silent(a_base, b_base, k):
    """k=0, k>depth, base+k>depth: the run takes 1 cycle, computes nothing, sets error, counts as rejected."""
    config = EngineConfig(rows=2, cols=2, wl=8, depth=4, max_k_log2=4)
    model = EngineModel(config)
    model.set_seeds([5, 6])
    assert not run_is_valid(config, a_base, b_base, k)
    assert model.run(a_base, b_base, k, clear=1, drain=1, shift=3, mode=1) == 1
    assert model.error and not model.results and model.lane_state == [5, 6]
    assert model.counters["rejected"] == 1 and model.counters["runs"] == 1 and model.counters["busy"] == 1
    model.clear_counters()
    assert not model.error and all(v == 0 for v in model.counters.values())


def test_run_cycles_closed_form():
    """Cycle formula: k for an accumulating chunk, k + operand registers + 2*rows + cols + rounder latency
    (k + 2*rows + cols + 3) for a draining one."""
    config = EngineConfig(rows=4, cols=2, wl=8, depth=16, max_k_log2=8)
    assert (OPERAND_LATENCY, ROUNDER_LATENCY) == (1, 2)
    assert run_cycles(config, 1, 0) == 1
    assert run_cycles(config, 16, 0) == 16
    assert run_cycles(config, 5, 1) == 5 + OPERAND_LATENCY + 8 + 2 + ROUNDER_LATENCY == 18
    for bad in (0, 17):
        with pytest.raises(ValueError, match=f"not {bad}"):
            run_cycles(config, bad, 1)
    # gemm_cycles agrees with the busy counter of the model after the same GEMM
    model = EngineModel(config)
    rng = np.random.default_rng(3)
    a, b = _rand(rng, 8, (5, 37)), _rand(rng, 8, (37, 3))
    gemm_via_engine(model, a, b, 4, 0)
    assert model.counters["busy"] == gemm_cycles(config, 5, 37, 3)
    assert model.counters["runs"] == 2 * 2 * 3


def test_layouts_and_argument_validation():
    """Payload widths follow the config; bad arguments raise ValueError/TypeError naming the value."""
    config = EngineConfig(rows=2, cols=4, wl=8, depth=16, max_k_log2=8)
    layouts = engine_layouts(config)
    assert layouts["a_write"].size == 4 + 2 * 8
    assert layouts["b_write"].size == 4 + 4 * 8
    assert layouts["run"].size == 4 + 4 + 5 + 2
    assert layouts["result"].size == 4 * 8 + 4 + 1
    assert layouts["counters"].size == 32 * len(COUNTER_NAMES)
    model = EngineModel(config)
    with pytest.raises(TypeError, match="EngineConfig"):
        EngineModel("4x4")
    with pytest.raises(ValueError, match="300"):
        model.write_a(0, [[300, 0]])
    with pytest.raises(ValueError, match="address 15"):
        model.write_b(15, np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match="seed"):
        model.set_seed(0, 0)
    with pytest.raises(ValueError, match="not 4"):
        model.set_seed(4, 1)
    with pytest.raises(RuntimeError, match="No drained tile"):
        model.read_result()
