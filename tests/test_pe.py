# amaranth: UnusedElaboratable=no
"""MAC processing element RTL (``fxtrain.rtl.pe``) under the Amaranth simulator against the PE golden models
(``docs/numerics.md`` §5), read out through the rounder (§3)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from fxtrain.rtl.pe import MACProcessingElement
from fxtrain.sim.benches.block_checks import AmaranthPorts, check_pe, pe_program
from fxtrain.sim.benches.pe_bench import PEWithRounder
from fxtrain.sim.pe import accumulator_width, pe_accumulate
from fxtrain.sim.pe_model import PECycleModel

SEED = 31337


def _play(harness, program, sums):
    result = {}

    async def bench(ctx):
        result["value"] = await check_pe(AmaranthPorts(ctx, harness), harness, program, sums)

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result["value"]


@pytest.mark.parametrize("wl,max_k,shift_max", [(16, 16, 32), (8, 4, 12), (2, 1, 3), (16, 1 << 20, 32)])
def test_pe_matches_models(wl, max_k, shift_max):
    """§5: every PE output equals PECycleModel in every cycle; acc equals pe_accumulate (the exact dot product)
    at each readout for K = 1 and K = max_k (most negative operands, max*min), random K, gaps, drains and
    overlapping runs; the readout through the rounder equals round_shift (saturating both ways)."""
    print(f"seed={SEED}")
    harness = PEWithRounder(wl, max_k, shift_max)
    runs = 60 if max_k <= 64 else 8
    program, sums = pe_program(wl, harness.acc_width, min(max_k, 64), shift_max, SEED, runs)
    coverage = _play(harness, program, sums)
    print(coverage)
    assert coverage["readouts"] >= runs and coverage["sums"] >= 5
    assert coverage["sat_high"] and coverage["sat_low"]
    assert coverage["extreme_sum"] == (max_k <= 64)
    assert harness.latency == MACProcessingElement.latency == 2


def test_most_negative_product_sum_is_exact():
    """§5: K = max_k products of (-2**(wl-1))**2 sum to max_k * 2**(2*wl-2), which fits accumulator_width."""
    wl, max_k = 16, 16
    assert pe_accumulate(np.full(max_k, -(1 << 15)), np.full(max_k, -(1 << 15)), wl, max_k) == max_k << 30
    assert max_k << 30 < 1 << (accumulator_width(wl, max_k) - 1)


def test_check_detects_wrong_rounder_latency_and_wrong_sum():
    """§5: the PE check can fail: a wrong readout latency, or a wrong expected dot product, is reported."""
    harness = PEWithRounder(8, 4, 12)
    program, sums = pe_program(8, harness.acc_width, 4, 12, SEED, 10)
    harness.rounder_latency = 3
    with pytest.raises(AssertionError, match="rounder"):
        _play(harness, program, sums)
    harness = PEWithRounder(8, 4, 12)
    wrong = {cycle: value + 1 for cycle, value in sums.items()}
    with pytest.raises(AssertionError, match="exact dot product"):
        _play(harness, program, wrong)


def test_cycle_model_accumulates_exactly():
    """§5: PECycleModel run on a dot product (with gaps) ends with pe_accumulate's value two edges after the last
    pair; forwarding outputs are the inputs one edge later."""
    rng = random.Random(SEED)
    a = [rng.randint(-128, 127) for _ in range(50)]
    b = [rng.randint(-128, 127) for _ in range(50)]
    model = PECycleModel(8, accumulator_width(8, 64))
    for i, (x, y) in enumerate(zip(a, b)):
        model.tick(x, y, 1, int(i == 0))
        assert (model.a_out, model.b_out, model.out_valid) == (x, y, 1)
        model.tick(0, 0, 0, 0)
    model.tick(0, 0, 0, 0)
    assert model.acc == pe_accumulate(np.array(a), np.array(b), 8, 64)


def test_pe_parameter_validation():
    """§5: bad word lengths and accumulator widths raise ValueError naming the value."""
    with pytest.raises(ValueError, match="PE word length must be an integer from 2 to 16, not 1"):
        MACProcessingElement(1, 8)
    with pytest.raises(ValueError, match="PE accumulator width must be an integer of at least 2\\*wl = 16, not 15"):
        MACProcessingElement(8, 15)
