"""The vectorised tiled-GEMM golden model equals a literal, loop-by-loop reading of docs/numerics.md §6."""

import numpy as np
import pytest

from fxtrain.sim.gemm import EngineConfig, tiled_gemm, tile_gemm
from fxtrain.sim.lfsr import generate, lane_seeds, lfsr_leap
from fxtrain.sim.rounding import RoundingMode


def literal_gemm(config, a, b, shift, mode, seeds):
    """§6 read literally: pad, visit tiles row-major, lane j rounds rows r = 0.. of column j, advance-then-use."""
    m, k = a.shape
    n = b.shape[1]
    mp = -(-m // config.rows) * config.rows
    np_ = -(-n // config.cols) * config.cols
    ap = np.zeros((mp, k), dtype=object)
    ap[:m] = a
    bp = np.zeros((k, np_), dtype=object)
    bp[:, :n] = b
    state = list(seeds)
    out = np.zeros((mp, np_), dtype=np.int64)
    sat = np.zeros((mp, np_), dtype=bool)
    lo, hi = -(1 << (config.wl - 1)), (1 << (config.wl - 1)) - 1
    for tm in range(mp // config.rows):
        for tn in range(np_ // config.cols):
            for j in range(config.cols):
                for r in range(config.rows):
                    row, col = tm * config.rows + r, tn * config.cols + j
                    acc = int(sum(int(ap[row, i]) * int(bp[i, col]) for i in range(k)))
                    state[j] = lfsr_leap(state[j], config.lane_width)
                    if mode == RoundingMode.STOCHASTIC:
                        offset = state[j] % (1 << shift)
                    else:
                        offset = (1 << (shift - 1)) - 1 if shift else 0
                    t = (acc + offset) >> shift
                    out[row, col] = min(max(t, lo), hi)
                    sat[row, col] = out[row, col] != t
    return out[:m, :n], sat[:m, :n], state


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (4, 4)])
@pytest.mark.parametrize("mode", [RoundingMode.NEAREST, RoundingMode.STOCHASTIC])
def test_tiled_gemm_matches_literal_reading(rows, cols, mode):
    """§6 steps 1-4 and §3: every output, every saturation flag and the final lane states agree."""
    seed = 1000 * rows + 10 * cols + int(mode)
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    config = EngineConfig(rows=rows, cols=cols, wl=8, depth=4)
    seeds = lane_seeds(seed, cols)
    state = seeds
    for m, k, n, shift in [(5, 7, 4, 6), (1, 1, 1, 0), (3, 9, 7, 14), (4, 2, 6, 32)]:
        a = rng.integers(-128, 128, (m, k))
        b = rng.integers(-128, 128, (k, n))
        result = tiled_gemm(config, a, b, shift, mode, state)
        want_c, want_sat, want_state = literal_gemm(config, a, b, shift, mode, state)
        np.testing.assert_array_equal(result.c, want_c)
        np.testing.assert_array_equal(result.saturated, want_sat)
        assert result.lane_state == want_state
        state = result.lane_state


def test_extreme_operands_saturate_both_ways():
    """§3/§5: most negative × most negative saturates high, most negative × most positive saturates low."""
    config = EngineConfig(rows=2, cols=2, wl=4, depth=2)
    a = np.array([[-8, -8], [-8, -8]])
    b = np.array([[-8, 7], [-8, 7]])
    result = tiled_gemm(config, a, b, 0, "nearest", [1, 2])
    np.testing.assert_array_equal(result.c, [[7, -8], [7, -8]])
    assert result.saturated.all()


def test_lane_state_advances_by_padded_output_count():
    """§6 step 3: each lane advances rows × (number of tiles) times, padding included, in both modes."""
    config = EngineConfig(rows=3, cols=2, wl=8, depth=4)
    a = np.ones((4, 3), dtype=np.int64)   # 2 row tiles (padded to 6)
    b = np.ones((3, 3), dtype=np.int64)   # 2 column tiles (padded to 4)
    for mode in ("nearest", "stochastic"):
        result = tiled_gemm(config, a, b, 2, mode, [5, 9])
        assert result.lane_state == [int(generate(5, 12)[-1]), int(generate(9, 12)[-1])]


def test_tile_gemm_checks_tile_shape():
    config = EngineConfig(rows=2, cols=2, wl=8, depth=4)
    with pytest.raises(ValueError, match=r"A tile must be 2 x K and B tile K x 2, not \(3, 1\) and \(1, 2\)"):
        tile_gemm(config, np.zeros((3, 1), dtype=int), np.zeros((1, 2), dtype=int), 0, "nearest", [1, 2])


@pytest.mark.parametrize("kwargs,message", [
    (dict(rows=0), "Array rows must be an integer from 1 to 32, not 0"),
    (dict(cols=33), "Array cols must be an integer from 1 to 32, not 33"),
    (dict(wl=17), "Word length must be an integer from 2 to 16, not 17"),
    (dict(depth=48), "Buffer depth must be a power of two from 2 to 65536, not 48"),
    (dict(depth=64, max_k_log2=5), "max_k_log2 5 gives a maximum K below the buffer depth 64"),
])
def test_engine_config_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**kwargs)


@pytest.mark.parametrize("args,message", [
    (dict(a=np.array([[128]]), b=np.array([[1]])), r"Operand A\[0, 0\] = 128 does not fit in 8 signed bits"),
    (dict(a=np.zeros((2, 3), int), b=np.zeros((2, 3), int)), r"must be M x K and K x N matrices"),
    (dict(a=np.zeros((1, 1), int), b=np.zeros((1, 1), int), shift=33), "Shift must be an integer from 0 to 32, not 33"),
    (dict(a=np.zeros((1, 1), int), b=np.zeros((1, 1), int), mode="up"), "Rounding mode must be 'nearest' or"),
    (dict(a=np.zeros((1, 1), int), b=np.zeros((1, 1), int), state=[0, 1]), "LFSR seed must be a non-zero 32-bit"),
])
def test_tiled_gemm_rejects_bad_input(args, message):
    config = EngineConfig(rows=2, cols=2, wl=8, depth=4)
    with pytest.raises(ValueError, match=message):
        tiled_gemm(config, args["a"], args["b"], args.get("shift", 0), args.get("mode", "nearest"),
                   args.get("state", [1, 2]))
