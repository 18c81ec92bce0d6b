"""Golden model of the LFSR lanes that feed the stochastic rounders (``docs/numerics.md`` §4).

A lane is a maximal-length Fibonacci LFSR of ``width`` bits. One *bit step* is::

    feedback = parity(state & tap_mask)          # tap_mask = OR of 1 << (t - 1) for t in LFSR_TAPS[width]
    state    = ((state << 1) | feedback) & (2**width - 1)

A rounding never sees a bit-step successor of the previous word: each time a lane is *advanced* it makes
``leap`` bit steps at once (``leap = width`` by default, so consecutive words share no bits of the underlying
m-sequence), and the rounder uses the new state. A lane loaded with seed ``S`` therefore hands the words
``L(S), L(L(S)), ...`` to its roundings, where ``L`` is the leap map.

Members
-------
LFSR_TAPS : dict
    Primitive feedback polynomials (Xilinx XAPP052 table) by width, 3 to 32 bits.
LANE_WIDTH : int
    Width of the lanes of the GEMM engine (32).
lfsr_step, lfsr_leap
    Bit-serial reference: one bit step, and ``leap`` of them.
LeapMap
    The leap as a GF(2) linear map: per-bit XOR masks for the RTL, fast vectorised application for emulators.
generate
    ``count`` consecutive lane words from a seed, by the bit-serial reference.
lane_words
    The same, vectorised (the emulator's hot path).
lane_seeds
    Lane seeds derived from one user seed, at maximally spaced phases of the sequence (§4.3).
lane_spacing
    Bit steps between consecutive lanes' seeds.
lane_advance
    A lane's state after many advances, without producing the words.
period
    Number of advances after which a lane repeats.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["LFSR_TAPS", "LANE_WIDTH", "lfsr_step", "lfsr_leap", "LeapMap", "generate", "lane_words",
           "lane_seeds", "lane_spacing", "lane_advance", "period", "check_lfsr"]

LFSR_TAPS = {
    3: (3, 2), 4: (4, 3), 5: (5, 3), 6: (6, 5), 7: (7, 6), 8: (8, 6, 5, 4), 9: (9, 5), 10: (10, 7),
    11: (11, 9), 12: (12, 6, 4, 1), 13: (13, 4, 3, 1), 14: (14, 5, 3, 1), 15: (15, 14), 16: (16, 15, 13, 4),
    17: (17, 14), 18: (18, 11), 19: (19, 6, 2, 1), 20: (20, 17), 21: (21, 19), 22: (22, 21), 23: (23, 18),
    24: (24, 23, 22, 17), 25: (25, 22), 26: (26, 6, 2, 1), 27: (27, 5, 2, 1), 28: (28, 25), 29: (29, 27),
    30: (30, 6, 4, 1), 31: (31, 28), 32: (32, 22, 2, 1),
}

LANE_WIDTH = 32


def check_lfsr(width, seed=None, leap=None):
    """Validate LFSR parameters, raising ``ValueError`` that names the bad value."""
    if not isinstance(width, int) or width not in LFSR_TAPS:
        raise ValueError(f"LFSR width must be an integer from {min(LFSR_TAPS)} to {max(LFSR_TAPS)}, not {width!r}")
    if seed is not None:
        if not isinstance(seed, (int, np.integer)) or not 0 < int(seed) < (1 << width):
            raise ValueError(f"LFSR seed must be a non-zero {width}-bit integer, not {seed!r}")
    if leap is not None:
        if not isinstance(leap, int) or leap < 1:
            raise ValueError(f"LFSR leap must be a positive integer, not {leap!r}")


def _tap_mask(width):
    mask = 0
    for tap in LFSR_TAPS[width]:
        mask |= 1 << (tap - 1)
    return mask


def lfsr_step(state, width):
    """One bit step of the Fibonacci LFSR (the definition; see the module docstring)."""
    feedback = bin(state & _tap_mask(width)).count("1") & 1
    return ((state << 1) | feedback) & ((1 << width) - 1)


def lfsr_leap(state, width, leap=None):
    """``leap`` bit steps (default ``width``): one lane advance, bit-serially."""
    for _ in range(width if leap is None else leap):
        state = lfsr_step(state, width)
    return state


def generate(seed, count, width=LANE_WIDTH, leap=None):
    """The first ``count`` words a lane loaded with ``seed`` hands out, computed bit-serially (slow, obvious)."""
    check_lfsr(width, seed, leap)
    words = []
    state = int(seed)
    for _ in range(count):
        state = lfsr_leap(state, width, leap)
        words.append(state)
    return np.array(words, dtype=np.uint64)


class LeapMap:
    """A power of the LFSR bit step as a linear map over GF(2).

    Parameters
    ----------
    width : int
        LFSR width (a key of :data:`LFSR_TAPS`).
    steps : int
        Number of bit steps the map performs.

    Members
    -------
    columns : tuple of int
        Image of each basis vector ``1 << j``.
    masks : tuple of int
        ``masks[i]`` selects the state bits whose parity is bit ``i`` of the image: the XOR network of the RTL.
    """

    def __init__(self, width, steps):
        check_lfsr(width, None, steps)
        self.width = width
        self.steps = steps
        if steps <= 2 * width:
            self.columns = tuple(lfsr_leap(1 << j, width, steps) for j in range(width))
        else:
            # L^steps = L^(steps - h) . L^h: map the columns of the first half through the second half, so a map
            # of any size costs O(width * log(steps)) vector applications instead of width * steps bit steps.
            first, second = _leap_map(width, steps // 2), _leap_map(width, steps - steps // 2)
            self.columns = tuple(int(col) for col in second(np.array(first.columns, dtype=np.uint64)))
        self.masks = tuple(sum(((col >> i) & 1) << j for j, col in enumerate(self.columns))
                           for i in range(width))
        nbytes = (width + 7) // 8
        values = np.arange(256, dtype=np.uint64)
        tables = np.zeros((nbytes, 256), dtype=np.uint64)
        for j, col in enumerate(self.columns):
            byte, bit = divmod(j, 8)
            tables[byte] ^= np.where((values >> np.uint64(bit)) & np.uint64(1), np.uint64(col), np.uint64(0))
        self._tables = tables

    def __call__(self, state):
        """Apply the map to a non-negative integer or to an array of them (uint64)."""
        if isinstance(state, (int, np.integer)):
            return int(self(np.array([state], dtype=np.uint64))[0])
        state = np.asarray(state, dtype=np.uint64)
        out = np.zeros_like(state)
        for byte, table in enumerate(self._tables):
            out ^= table[(state >> np.uint64(8 * byte)) & np.uint64(0xFF)]
        return out


@lru_cache(maxsize=None)
def _leap_map(width, steps):
    return LeapMap(width, steps)


def lane_words(state, count, width=LANE_WIDTH, leap=None):
    """``count`` consecutive words of a lane whose current state is ``state``, and the state afterwards.

    Bit-identical to :func:`generate` but vectorised: the run is cut into blocks whose start states are found with
    a jump map, then all blocks advance together. Returns ``(words, new_state)`` with ``words`` as uint64.
    """
    check_lfsr(width, state, leap)
    leap = width if leap is None else leap
    if count <= 0:
        return np.zeros(0, dtype=np.uint64), int(state)
    step = _leap_map(width, leap)
    block = 1 << max(0, int(math.log2(count)) // 2)
    nblocks = -(-count // block)
    jump = _leap_map(width, leap * block)
    starts = np.empty(nblocks, dtype=np.uint64)
    cur = int(state)
    for j in range(nblocks):
        starts[j] = cur
        cur = jump(cur)
    out = np.empty((nblocks, block), dtype=np.uint64)
    cur = starts
    for i in range(block):
        cur = step(cur)
        out[:, i] = cur
    words = out.reshape(-1)[:count]
    return words, int(words[-1])


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def lane_seeds(seed, count, width=LANE_WIDTH):
    """Seeds for ``count`` lanes from the user seed ``seed``, at maximally spaced phases of one m-sequence (§4.3).

    Lane 0 takes the low ``width`` bits of ``splitmix64(seed * 2**16 + attempt * 2**15)`` for the first
    ``attempt = 0, 1, ...`` that is non-zero; lane ``i`` is lane 0's seed after ``i * floor((2**width - 1) / count)``
    bit steps (one cached jump map, applied ``count - 1`` times). Lanes advance in lockstep, so any two lanes stay at
    least ``floor((2**width - 1) / count)`` bit steps apart on the sequence forever.
    """
    check_lfsr(width)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Seed must be a non-negative integer, not {seed!r}")
    full = (1 << width) - 1
    if not isinstance(count, int) or count < 1 or count > min(1 << 15, full):
        raise ValueError(f"Lane count must be an integer from 1 to {min(1 << 15, full)}, not {count!r}")
    attempt = 0
    while not (base := _splitmix64(((int(seed) << 16) + (attempt << 15)) & 0xFFFFFFFFFFFFFFFF) & full):
        attempt += 1
    seeds = [base]
    if count > 1:
        jump = _leap_map(width, lane_spacing(count, width))
        for _ in range(count - 1):
            seeds.append(jump(seeds[-1]))
    return seeds


def lane_spacing(count, width=LANE_WIDTH):
    """Bit steps between consecutive lanes' seeds: ``floor((2**width - 1) / count)`` (§4.3)."""
    return ((1 << width) - 1) // count


def period(width, leap=None):
    """Advances after which a lane's word sequence repeats: ``(2**width - 1) / gcd(leap, 2**width - 1)``."""
    check_lfsr(width, None, leap)
    full = (1 << width) - 1
    return full // math.gcd(width if leap is None else leap, full)


def lane_advance(state, count, width=LANE_WIDTH, leap=None):
    """State of a lane after ``count`` advances from ``state`` (one cached jump map per set bit of ``count``)."""
    check_lfsr(width, state, leap)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"Advance count must be a non-negative integer, not {count!r}")
    leap = width if leap is None else leap
    state, count, power = int(state), int(count), 0
    while count:
        if count & 1:
            state = _leap_map(width, leap << power)(state)
        count >>= 1
        power += 1
    return state
