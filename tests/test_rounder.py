# amaranth: UnusedElaboratable=no
"""StochasticRounder RTL (``fxtrain.rtl.rounder``) under the Amaranth simulator against ``round_shift``
(``docs/numerics.md`` §3, §5), including the lane-fed statistics of §4.4."""

import pytest
from amaranth.sim import Simulator

from fxtrain.rtl.rounder import StochasticRounder
from fxtrain.sim.benches.block_checks import (AmaranthPorts, check_rounder, rounder_coverage, rounder_program,
                                              statistics_program)
from fxtrain.sim.benches.rounder_bench import RounderWithLane
from fxtrain.sim.lfsr import lane_seeds
from fxtrain.sim.randomness import rounding_bias

SEED = 777


def _play(harness, program):
    result = {}

    async def bench(ctx):
        result["value"] = await check_rounder(AmaranthPorts(ctx, harness), harness, program)

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result["value"]


@pytest.mark.parametrize("wl,acc_width,shift_max", [(16, 52, 32), (8, 19, 12), (2, 4, 0), (4, 8, 1), (16, 16, 32)])
def test_rounder_matches_round_shift(wl, acc_width, shift_max):
    """§3, §5: out/sat/o_valid equal round_shift in every cycle at latency 2, for s = 0 .. shift_max, both
    modes, acc at the extremes of acc_width, both saturation thresholds, ties, rand 0 / all ones, random
    inputs, idle gaps."""
    print(f"seed={SEED}")
    harness = RounderWithLane(wl, acc_width, shift_max)
    results = _play(harness, rounder_program(wl, acc_width, shift_max, SEED, 600))
    assert len(results) > 600
    coverage = rounder_coverage(results)
    assert coverage["shifts"] == {0: list(range(shift_max + 1)), 1: list(range(shift_max + 1))}
    if acc_width > wl:                      # with acc_width == wl nothing can saturate
        assert coverage["sat_high"] and coverage["sat_low"]
    else:
        assert coverage["sat_high"] == coverage["sat_low"] == 0
    assert harness.latency == StochasticRounder.latency == 2


@pytest.mark.parametrize("wl,acc_width,shift_max", [(16, 52, 32), (8, 19, 12), (4, 8, 1)])
def test_registered_shift_rounds_with_the_previous_cycles_shift(wl, acc_width, shift_max):
    """§3, §5, shift_setup = 1 (the engine's rounders): with shift and mode changing at random in every cycle
    (idle ones included), each input is rounded exactly as round_shift with the shift and mode presented one
    cycle before it, and the data latency stays 2 (the harness adds its one data register, 3 in all)."""
    print(f"seed={SEED}")
    harness = RounderWithLane(wl, acc_width, shift_max, shift_setup=1)
    assert harness.rounder.latency == 2 and harness.latency == 3
    results = _play(harness, rounder_program(wl, acc_width, shift_max, SEED + 1, 400))
    assert rounder_coverage(results)["shifts"] == {0: list(range(shift_max + 1)), 1: list(range(shift_max + 1))}


def test_registered_shift_is_not_taken_with_the_input():
    """shift_setup = 1: fed shift in the same cycle as its input (no data register in the harness), the rounder
    rounds with the previous cycle's shift, and the bit-exact check catches it."""
    harness = RounderWithLane(8, 19, 12, shift_setup=1)
    harness.shift_setup, harness.latency = 0, 2
    with pytest.raises(AssertionError, match="shift="):
        _play(harness, rounder_program(8, 19, 12, SEED, 50))


def test_check_detects_wrong_latency():
    """§5: the cycle check pins the latency: a harness claiming latency 1 or 3 fails it."""
    for wrong in (1, 3):
        harness = RounderWithLane(8, 19, 12)
        harness.latency = wrong
        with pytest.raises(AssertionError):
            _play(harness, rounder_program(8, 19, 12, SEED, 20))


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.3, 0.05, 0.9])
def test_lane_fed_stochastic_rounding_is_unbiased(fraction):
    """§3, §4.4: a constant acc with fractional part f, rounded 2000 times by the rounder with its LFSR lane's
    words (advance-then-use), has mean error within 6*sqrt(f(1-f)/n) ulp; round-to-nearest on the same inputs
    fails the same check (its bias min(f, 1-f) is resolved)."""
    shift, count = 10, 2000
    acc = -(5 << shift) + round(fraction * (1 << shift))
    harness = RounderWithLane(8, 19, 12)
    results = _play(harness, statistics_program(acc, shift, count, lane_seeds(SEED, 1)[0]))
    stochastic = rounding_bias([r[1] for r in results if r[0] == 1], acc, shift)
    nearest = rounding_bias([r[1] for r in results if r[0] == 0], acc, shift)
    print(f"f={fraction}: stochastic {stochastic}, nearest {nearest}")
    assert stochastic.passed, stochastic
    assert not nearest.passed, nearest


def test_rounding_bias_rejects_exact_values():
    """§3: the bias check refuses a value without a fractional part (it would test nothing)."""
    with pytest.raises(ValueError, match="acc = 1024 has no fractional part at shift 10"):
        rounding_bias([1, 1], 1024, 10)


def test_rounder_parameter_validation():
    """§5: bad word lengths, widths, shift_max and rand_width raise ValueError naming the value."""
    with pytest.raises(ValueError, match="Rounder word length must be an integer from 2 to 16, not 17"):
        StochasticRounder(17, 40)
    with pytest.raises(ValueError, match="Rounder accumulator width must be an integer of at least 8, not 7"):
        StochasticRounder(8, 7)
    with pytest.raises(ValueError, match="Rounder shift_max must be an integer from 0 to 32, not 33"):
        StochasticRounder(8, 20, shift_max=33)
    with pytest.raises(ValueError, match="Rounder rand_width must be an integer of at least 12, not 8"):
        StochasticRounder(8, 20, shift_max=12, rand_width=8)
    with pytest.raises(ValueError, match="Rounder word length must be an integer from 2 to 16, not True"):
        StochasticRounder(True, 20)
    with pytest.raises(ValueError, match="Rounder shift_setup must be an integer from 0 to 1, not 2"):
        StochasticRounder(8, 20, shift_setup=2)
