"""GEMM emulators (fxtrain.host.emulator): the exact one is the golden model, the fast one its statistical twin."""

import numpy as np
import pytest
import torch

from fxtrain.host.emulator import ExactEmulator, FastEmulator
from fxtrain.sim.gemm import EngineConfig, tiled_gemm
from fxtrain.sim.lfsr import lane_seeds


def _operands(rng, m, k, n, wl=16):
    lo, hi = -(1 << (wl - 1)), 1 << (wl - 1)
    return rng.integers(lo, hi, (m, k)), rng.integers(lo, hi, (k, n))


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_exact_emulator_equals_tiled_gemm_over_a_sequence_of_gemms(mode):
    """A sequence of GEMMs of awkward shapes (K=1, M,N not tile multiples, s=0 and s=32, a large-M GEMM whose nearest
    mode advances each lane thousands of times) equals tiled_gemm with the lane state carried from call to call."""
    seed = 123
    print("seed", seed)
    rng = np.random.default_rng(seed)
    config = EngineConfig(rows=4, cols=4, wl=16)
    emulator = ExactEmulator(config, seed=5)
    state = lane_seeds(5, config.lanes)
    for m, k, n, shift in [(1, 1, 1, 0), (7, 3, 5, 14), (1100, 9, 6, 20), (3, 200, 9, 32), (64, 25, 13, 8)]:
        a, b = _operands(rng, m, k, n)
        got = emulator.gemm(a, b, shift, mode, b_key=("w", 0))
        want = tiled_gemm(config, a, b, shift, mode, state)
        state = want.lane_state
        assert np.array_equal(got.c, want.c), (m, k, n, shift)
        assert np.array_equal(got.saturated, want.saturated)
        assert emulator.lane_state == want.lane_state
    assert emulator.counters["gemms"] == 5


def test_exact_emulator_saturates_at_both_ends():
    """Most negative operands and s=0: results clamp at both ends and are flagged."""
    emulator = ExactEmulator(EngineConfig(wl=8))
    a = np.full((2, 3), -128)
    b = np.array([[-128, 1, 0], [-128, 1, 0], [-128, 1, 0]])
    result = emulator.gemm(a, b, 0, "nearest")
    assert result.c[0].tolist() == [127, -128, 0]
    assert result.saturated[0].tolist() == [True, True, False]
    assert emulator.counters["saturated"] == 4


def test_exact_emulator_is_reproducible_and_seed_resets_lanes():
    rng = np.random.default_rng(8)
    a, b = _operands(rng, 9, 17, 6)
    first = ExactEmulator(seed=3)
    second = ExactEmulator(seed=3)
    r1 = first.gemm(a, b, 16, "stochastic")
    assert np.array_equal(r1.c, second.gemm(a, b, 16, "stochastic").c)
    r2 = first.gemm(a, b, 16, "stochastic")
    assert not np.array_equal(r1.c, r2.c)  # lanes moved on
    first.seed(3)
    assert np.array_equal(first.gemm(a, b, 16, "stochastic").c, r1.c)
    state = first.state_dict()
    again = ExactEmulator(seed=99)
    again.load_state_dict(state)
    assert np.array_equal(again.gemm(a, b, 16, "stochastic").c, first.gemm(a, b, 16, "stochastic").c)


def test_fast_emulator_nearest_equals_golden_model_and_accepts_torch():
    rng = np.random.default_rng(21)
    config = EngineConfig()
    a, b = _operands(rng, 33, 40, 7)
    want = tiled_gemm(config, a, b, 15, "nearest", lane_seeds(0, config.lanes))
    fast = FastEmulator(config)
    assert np.array_equal(fast.gemm(a, b, 15, "nearest").c, want.c)
    result = fast.gemm(torch.from_numpy(a).float(), torch.from_numpy(b).float(), 15, "nearest")
    assert torch.equal(result.c, torch.from_numpy(want.c).double())
    assert torch.equal(result.saturated, torch.from_numpy(want.saturated))


def test_fast_emulator_stochastic_is_unbiased_within_one_ulp_and_seeded():
    """Stochastic results are floor or ceil of the exact quotient, their mean error is ~0, and the seed fixes
    them; the same holds for the exact emulator (compared on the same GEMM)."""
    seed = 31
    print("seed", seed)
    rng = np.random.default_rng(seed)
    a, b = _operands(rng, 400, 30, 50, wl=12)
    shift = 18
    exact = (a @ b) / 2.0 ** shift
    for backend in (FastEmulator(seed=4), ExactEmulator(seed=4)):
        c = backend.gemm(a, b, shift, "stochastic").c
        assert ((c == np.floor(exact)) | (c == np.ceil(exact))).all()
        assert abs((c - exact).mean()) < 5 * 0.5 / np.sqrt(c.size)
    x = FastEmulator(seed=4).gemm(a, b, shift, "stochastic").c
    y = FastEmulator(seed=4).gemm(a, b, shift, "stochastic").c
    assert np.array_equal(x, y)


@pytest.mark.parametrize("cls", [ExactEmulator, FastEmulator])
def test_bad_gemm_inputs_raise_clear_errors(cls):
    backend = cls(EngineConfig(wl=8, max_k_log2=10, depth=512))
    ok = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="Shift"):
        backend.gemm(ok, ok.T, 33, "nearest")
    with pytest.raises(ValueError, match="M x K and K x N"):
        backend.gemm(ok, ok, 4, "nearest")
    with pytest.raises(ValueError, match="8 signed bits"):
        backend.gemm(ok + 200, ok.T, 4, "nearest")
    with pytest.raises(ValueError, match="maximum K"):
        backend.gemm(np.zeros((1, 2048), dtype=np.int64), np.zeros((2048, 1), dtype=np.int64), 4, "nearest")
    with pytest.raises(ValueError, match="Rounding mode"):
        backend.gemm(ok, ok.T, 4, "round-up")
    with pytest.raises(ValueError, match="Seed"):
        backend.seed(-1)
