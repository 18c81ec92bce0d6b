"""Compiled kernels (fxtrain.host.kernels): LFSR words equal the golden model's, rounders equal tiled_gemm, and
results do not depend on the number of threads."""

import numpy as np
import pytest
import torch

from fxtrain.host import kernels
from fxtrain.host.emulator import ExactEmulator, FastEmulator
from fxtrain.host.quantize import quantize, quantize_raw
from fxtrain.sim.gemm import EngineConfig, tiled_gemm
from fxtrain.sim.lfsr import generate, lane_seeds


@pytest.fixture
def threads():
    """``threads(n)`` pins the kernels to ``n`` threads; restored to 'follow torch' afterwards."""
    yield kernels.set_threads
    kernels.set_threads(None)


@pytest.mark.parametrize("width", [3, 7, 16, 31, 32])
def test_compiled_lane_words_equal_the_bit_serial_reference(width):
    """The compiled leap (byte tables built from LeapMap.columns) gives the words of sim.lfsr.generate."""
    seed = (0x2545F491 % ((1 << width) - 1)) + 1
    words, state = kernels.lane_words(seed, 300, width)
    expected = generate(seed, 300, width)
    assert np.array_equal(words, expected)
    assert state == int(expected[-1])


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("mode", ["stochastic", "nearest"])
def test_exact_emulator_equals_tiled_gemm_for_any_thread_count(threads, n_threads, mode):
    """Large GEMMs (the lane rounder then cuts the tile rows into one block per thread, each from jumped-ahead
    lane states) and odd geometries equal the golden model bit for bit, lane states included."""
    seed = 77
    print("seed", seed)
    threads(n_threads)
    rng = np.random.default_rng(seed)
    for config, (m, k, n, shift) in [(EngineConfig(4, 4), (9001, 5, 7, 13)), (EngineConfig(3, 5), (4099, 17, 11, 32)),
                                     (EngineConfig(1, 1), (1, 1, 1, 0)), (EngineConfig(2, 3, wl=8), (20001, 3, 2, 4))]:
        lo, hi = -(1 << (config.wl - 1)), 1 << (config.wl - 1)
        a, b = rng.integers(lo, hi, (m, k)), rng.integers(lo, hi, (k, n))
        emulator = ExactEmulator(config, seed=9)
        want = tiled_gemm(config, a, b, shift, mode, lane_seeds(9, config.lanes))
        got = emulator.gemm(a, b, shift, mode)
        assert np.array_equal(got.c, want.c), (m, k, n)
        assert np.array_equal(got.saturated, want.saturated)
        assert emulator.lane_state == want.lane_state
        floating = ExactEmulator(config, seed=9).gemm(torch.from_numpy(a).double(), torch.from_numpy(b).float(),
                                                      shift, mode)
        assert np.array_equal(floating.c.numpy(), want.c)
        assert floating.saturated_count == int(want.saturated.sum())


def test_quantizer_and_fast_emulator_do_not_depend_on_the_thread_count(threads):
    """Same key, 1 or 2 threads: identical quantized values, saturation counts and fast-emulator results."""
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(4)) * 300
    a = torch.randint(-2000, 2000, (70_000, 9), generator=torch.Generator().manual_seed(5)).double()
    b = torch.randint(-2000, 2000, (9, 3), generator=torch.Generator().manual_seed(6)).double()
    results = []
    for n_threads in (1, 2):
        threads(n_threads)
        q, sat = quantize(x, "16.8", "stochastic", torch.Generator().manual_seed(1), count_saturated=True)
        r = FastEmulator(seed=2).gemm(a, b, 12, "stochastic")
        results.append((q, sat, r.c, r.saturated_count))
    (q1, s1, c1, n1), (q2, s2, c2, n2) = results
    assert torch.equal(q1, q2) and s1 == s2 > 0
    assert torch.equal(c1, c2) and n1 == n2


def test_quantizer_dtype_and_out_options():
    """float64 results from float32 input (the emulators' GEMM operands), writing into ``out``, and clear errors
    for a bad ``out`` or ``dtype``; a NaN deep inside a large tensor is still refused."""
    x = torch.randn(1000, generator=torch.Generator().manual_seed(8)) * 10
    raw64 = quantize_raw(x, "16.10", "nearest", dtype=torch.float64)
    assert raw64.dtype == torch.float64
    assert torch.equal(raw64, quantize_raw(x.double(), "16.10", "nearest"))
    out = torch.empty(1000)
    same = quantize(x, "16.10", "stochastic", torch.Generator().manual_seed(2), out=out)
    assert same.data_ptr() == out.data_ptr()
    assert torch.equal(same, quantize(x, "16.10", "stochastic", torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="out must be"):
        quantize(x, "16.10", out=torch.empty(999))
    with pytest.raises(ValueError, match="dtype must be"):
        quantize_raw(x, "16.10", dtype=torch.int32)
    big = torch.zeros(200_000)
    big[123_457] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        quantize_raw(big, "16.8", "stochastic")


def test_fast_emulator_offsets_are_uniform():
    """The fast emulator's offsets (top s bits of the counter-based words) are uniform on [0, 2**s): rounding
    acc = j (j = 0..15) at s = 4 rounds up with probability j / 16 (5-sigma binomial bounds)."""
    n = 20_000
    acc = torch.arange(16, dtype=torch.float64).repeat(n, 1)  # n x 16, column j holds j
    ones = torch.eye(16, dtype=torch.float64)
    c = FastEmulator(seed=3).gemm(acc, ones, 4, "stochastic").c
    p = c.double().mean(0)
    expected = torch.arange(16, dtype=torch.float64) / 16
    sigma = (expected * (1 - expected) / n).sqrt()
    print("P(up)", p.tolist())
    assert ((p - expected).abs() <= 5 * sigma + 1e-12).all()
