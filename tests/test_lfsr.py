# amaranth: UnusedElaboratable=no
"""LFSR lanes: golden model (``fxtrain.sim.lfsr``) and the Amaranth RTL (``fxtrain.rtl.lfsr``) under the
Amaranth simulator, against ``docs/numerics.md`` §4."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from fxtrain.rtl.lfsr import LFSR, LFSRLanes
from fxtrain.sim.benches.block_checks import AmaranthPorts, check_lfsr_lanes, lfsr_program
from fxtrain.sim.lfsr import (LFSR_TAPS, LeapMap, check_lfsr, generate, lane_advance, lane_seeds, lane_spacing,
                              lane_words, lfsr_leap, lfsr_step, period)
from fxtrain.sim.randomness import lag1_correlation

SEED = 4242


def _prime_factors(n):
    """Distinct prime factors of ``n`` by trial division."""
    factors, p = [], 2
    while p * p <= n:
        if n % p == 0:
            factors.append(p)
            while n % p == 0:
                n //= p
        p += 1 if p == 2 else 2
    if n > 1:
        factors.append(n)
    return factors


def _polymulmod(a, b, modulus, degree):
    """``a * b mod modulus`` over GF(2); polynomials as int bit masks."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a >> degree & 1:
            a ^= modulus
    return result


def _x_power(exponent, modulus, degree):
    result, base = 1, 0b10
    while exponent:
        if exponent & 1:
            result = _polymulmod(result, base, modulus, degree)
        base = _polymulmod(base, base, modulus, degree)
        exponent >>= 1
    return result


def test_prime_factors_by_trial_division():
    """§4.1 (helper of the primitivity test): the trial-division factorisations it relies on are right."""
    assert _prime_factors((1 << 32) - 1) == [3, 5, 17, 257, 65537]
    assert _prime_factors((1 << 31) - 1) == [(1 << 31) - 1]
    assert _prime_factors(255) == [3, 5, 17]


@pytest.mark.parametrize("width", sorted(LFSR_TAPS))
def test_taps_polynomial_is_primitive(width):
    """§4.1: the recurrence polynomial of LFSR_TAPS[width] is primitive: x has order exactly 2**width - 1 modulo
    it (x**(2**w-1) = 1 and x**((2**w-1)/q) != 1 for every prime q dividing 2**w - 1, factored by trial
    division). The polynomial is read off the bit step itself: s[k+w] = XOR over taps t of s[k+w-t]."""
    taps = LFSR_TAPS[width]
    modulus = 1 << width
    for t in taps:
        modulus ^= 1 << (width - t)
    # the recurrence really is what lfsr_step computes: feed a bit sequence through it
    state, bits = 0b1, []
    for _ in range(3 * width):
        state = lfsr_step(state, width)
        bits.append(state & 1)
    for k in range(len(bits) - width):
        assert bits[k + width] == np.bitwise_xor.reduce([bits[k + width - t] for t in taps])
    order = (1 << width) - 1
    assert _x_power(order, modulus, width) == 1
    for q in _prime_factors(order):
        assert _x_power(order // q, modulus, width) != 1, (width, q)


def test_primitivity_check_rejects_a_reducible_polynomial():
    """§4.1: the order check can fail: x^4 + x^2 + 1 = (x^2 + x + 1)^2 is not primitive."""
    modulus, order = 0b10101, 15
    assert _x_power(order, modulus, 4) != 1 or any(_x_power(order // q, modulus, 4) == 1
                                                   for q in _prime_factors(order))


@pytest.mark.parametrize("width,leap", [(w, None) for w in range(3, 12)] + [(w, 1) for w in range(3, 10)]
                         + [(6, 3), (8, 5), (4, 5), (10, 11)])
def test_exhaustive_period_matches_period(width, leap):
    """§4.2: iterating the advance from a seed returns to it after exactly period(width, leap) advances, and
    over one period every state is distinct and non-zero (exhaustive for small widths)."""
    leap_map = LeapMap(width, width if leap is None else leap)
    seed = 1 + (SEED % ((1 << width) - 1))
    seen, state = set(), seed
    while True:
        state = leap_map(state)
        assert state != 0
        seen.add(state)
        if state == seed:
            break
        assert len(seen) <= (1 << width)
    assert len(seen) == period(width, leap)


@pytest.mark.parametrize("width,leap", [(32, None), (32, 1), (16, None), (7, 3), (5, 13)])
@pytest.mark.parametrize("count", [0, 1, 7, 300])
def test_lane_words_equals_generate(width, leap, count):
    """§4.2: the vectorised lane_words is bit-identical to the bit-serial generate, and returns the last word as
    the new state (advance-then-use: the seed is never a word)."""
    rng = random.Random(SEED + count)
    seed = rng.randrange(1, 1 << width)
    words, new_state = lane_words(seed, count, width, leap)
    want = generate(seed, count, width, leap)
    assert words.dtype == np.uint64 and np.array_equal(words, want)
    assert new_state == (int(want[-1]) if count else seed)
    if count:
        assert int(words[0]) == lfsr_leap(seed, width, leap) != seed


@pytest.mark.parametrize("width,leap", [(32, None), (9, 2), (5, None)])
def test_lane_advance_consistent(width, leap):
    """§4.2: lane_advance(s, c) is the state after c advances (== last generated word), composes additively, and
    returns to s after exactly period() advances (2**32 - 1 for the 32-bit lanes: jump maps are composed, not
    stepped)."""
    rng = random.Random(SEED)
    seed = rng.randrange(1, 1 << width)
    for count in (0, 1, 2, 3, 31, 64, 100):
        want = int(generate(seed, count, width, leap)[-1]) if count else seed
        assert lane_advance(seed, count, width, leap) == want
    a, b = rng.randrange(1, 1 << 40), rng.randrange(1, 1 << 40)
    print("seed", seed, "a", a, "b", b)
    assert lane_advance(lane_advance(seed, a, width, leap), b, width, leap) == lane_advance(seed, a + b, width, leap)
    assert lane_advance(seed, period(width, leap), width, leap) == seed
    assert lane_advance(seed, period(width, leap) - 1, width, leap) != seed
    with pytest.raises(ValueError, match="Advance count must be a non-negative integer, not -1"):
        lane_advance(seed, -1, width, leap)


def test_lane_seeds_distinct_nonzero_deterministic():
    """§4.3: lane_seeds gives distinct non-zero width-bit seeds, the same for the same user seed, different for
    another user seed; lane 0 keeps the splitmix64 seed; a tiny width uses every non-zero 3-bit value once."""
    seeds = lane_seeds(SEED, 64)
    assert len(set(seeds)) == 64 and all(0 < s < 1 << 32 for s in seeds)
    assert seeds == lane_seeds(SEED, 64)
    assert seeds[0] == lane_seeds(SEED, 1)[0] == lane_seeds(SEED, 8)[0]
    assert set(seeds).isdisjoint(lane_seeds(SEED + 1, 64))
    assert sorted(lane_seeds(3, 7, width=3)) == list(range(1, 8))
    for bad, message in ((-1, "Seed must be a non-negative integer, not -1"), (1.5, "not 1.5")):
        with pytest.raises(ValueError, match=message):
            lane_seeds(bad, 4)
    with pytest.raises(ValueError, match="Lane count must be an integer from 1 to 32768, not 0"):
        lane_seeds(1, 0)
    with pytest.raises(ValueError, match="Lane count must be an integer from 1 to 7, not 8"):
        lane_seeds(1, 8, width=3)


@pytest.mark.parametrize("seed", [0, SEED])
def test_lane_seeds_of_a_28x28_array_are_maximally_spaced(seed):
    """§4.3 (issue 11): the 784 lanes of a 28x28 array sit at phases i * floor((2**32 - 1) / 784) of one m-sequence:
    lane i + 1 is lane i after exactly that many bit steps, and lane 0 follows the last lane after the remainder of
    the period (no closer). Since lanes advance in lockstep, no lane ever repeats another's bits at a lag under
    5,478,274 bit steps (171,196 advances); the former splitmix64-per-lane seeds had pairs ~2.4e5 bit steps apart."""
    count, full = 784, (1 << 32) - 1
    seeds = lane_seeds(seed, count)
    spacing = lane_spacing(count)
    assert spacing == full // count == 5_478_274
    for i in range(count - 1):
        assert lane_advance(seeds[i], spacing, 32, leap=1) == seeds[i + 1], i
    rest = full - (count - 1) * spacing
    assert rest >= spacing and lane_advance(seeds[-1], rest, 32, leap=1) == seeds[0]


def test_lane_seed_phases_by_walking_the_whole_sequence():
    """§4.3 without jump maps: for 16-bit lanes, walking the full period bit by bit from lane 0's seed finds every
    lane's seed at offset i * floor(65535 / 10), so the minimum circular phase distance is 6553 bit steps."""
    count, width = 10, 16
    seeds = lane_seeds(SEED, count, width)
    offsets, state = {}, seeds[0]
    for step in range((1 << width) - 1):
        offsets[state] = step
        state = lfsr_step(state, width)
    assert state == seeds[0]
    phases = [offsets[s] for s in seeds]
    assert phases == [i * (65535 // count) for i in range(count)]
    gaps = np.diff(phases + [65535])
    assert gaps.min() == 6553


def test_check_lfsr_messages():
    """§4.1: invalid widths, seeds and leaps raise ValueError naming the value."""
    with pytest.raises(ValueError, match="LFSR width must be an integer from 3 to 32, not 33"):
        check_lfsr(33)
    with pytest.raises(ValueError, match="LFSR seed must be a non-zero 8-bit integer, not 0"):
        check_lfsr(8, 0)
    with pytest.raises(ValueError, match="LFSR seed must be a non-zero 8-bit integer, not 256"):
        check_lfsr(8, 256)
    with pytest.raises(ValueError, match="LFSR leap must be a positive integer, not 0"):
        check_lfsr(8, 1, 0)


def test_golden_one_step_lfsr_fails_correlation_check():
    """§4.2: on golden-model words, the lag-1 check accepts the leap-32 lane and rejects the one-bit-step one."""
    seed = lane_seeds(SEED, 1)[0]
    good = lag1_correlation(lane_words(seed, 4096)[0])
    bad = lag1_correlation(lane_words(seed, 4096, leap=1)[0])
    assert good.passed, good
    assert not bad.passed and bad.statistic > 0.4, bad


def _simulate(design, testbench):
    result = {}

    async def bench(ctx):
        result["value"] = await testbench(ctx)

    sim = Simulator(design)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result["value"]


@pytest.mark.parametrize("n,width,leap", [(3, 32, None), (2, 32, 1), (1, 3, None), (2, 8, 5), (4, 16, None),
                                          (2, 31, 7)])
def test_lfsr_lanes_rtl_matches_model(n, width, leap):
    """§4.1-§4.3: LFSRLanes equals the golden leap map in every cycle (state and next_state of every lane)
    through random per-lane advances and seed loads into random lanes, zero loads ignored; the captured
    advance-then-use words equal lane_words."""
    print(f"seed={SEED}")
    lanes = LFSRLanes(n, width, leap=leap)
    program = lfsr_program(n, width, SEED, 400, 300)
    words = _simulate(lanes, lambda ctx: check_lfsr_lanes(AmaranthPorts(ctx, lanes), lanes, program, 1))
    want, _ = lane_words(lane_seeds(SEED, n, width)[0], 300, width, leap)
    assert words[-300:] == [int(w) for w in want]


def test_lfsr_reset_load_and_zero_load():
    """§4.3: a single LFSR resets to reset_seed, ignores a load of 0 (advancing if asked), loads a non-zero
    seed with priority over advance, and next_state is the leap map of state."""
    lfsr = LFSR(16, reset_seed=0xACE1)
    leap = LeapMap(16, 16)

    async def bench(ctx):
        assert ctx.get(lfsr.state) == 0xACE1
        assert ctx.get(lfsr.next_state) == leap(0xACE1)
        ctx.set(lfsr.load, 1)
        ctx.set(lfsr.seed, 0)
        await ctx.tick()
        assert ctx.get(lfsr.state) == 0xACE1
        ctx.set(lfsr.advance, 1)
        await ctx.tick()
        assert ctx.get(lfsr.state) == leap(0xACE1)
        ctx.set(lfsr.seed, 0x1234)
        await ctx.tick()
        assert ctx.get(lfsr.state) == 0x1234
        ctx.set(lfsr.load, 0)
        await ctx.tick()
        assert ctx.get(lfsr.state) == leap(0x1234)
        ctx.set(lfsr.advance, 0)
        await ctx.tick()
        assert ctx.get(lfsr.state) == leap(0x1234)
        return True

    assert _simulate(lfsr, bench)


def test_lfsr_parameter_validation():
    """§4.1: bad widths, leaps, reset seeds and lane counts raise ValueError naming the value."""
    with pytest.raises(ValueError, match="LFSR width must be an integer from 3 to 32, not 2"):
        LFSR(2)
    with pytest.raises(ValueError, match="LFSR leap must be a positive integer, not 0"):
        LFSR(8, leap=0)
    with pytest.raises(ValueError, match="LFSR reset seed must be a non-zero 8-bit integer, not 0"):
        LFSR(8, reset_seed=0)
    with pytest.raises(ValueError, match="LFSR reset seed must be a non-zero 8-bit integer, not 256"):
        LFSRLanes(2, 8, reset_seed=256)
    with pytest.raises(ValueError, match="Number of LFSR lanes must be a positive integer, not 0"):
        LFSRLanes(0)
    assert LFSR(8).leap == 8 and LFSR(8, leap=3).leap == 3
