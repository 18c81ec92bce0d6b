"""Compiled (numba) kernels of the host's hot paths: the fused quantizer and the emulators' rounders.

Every kernel is one pass over its data with no temporaries, and runs on ``numba``'s thread pool. They are
deterministic for a given key whatever the thread count: the random number of element ``i`` is a function of
``(key, i)`` only (a counter-based generator), and the only reductions are integer counts.

Why numba: it compiles these loops with LLVM at first use (cached on disk afterwards), needs no C compiler on the
user's machine, is a well-kept PyPI wheel for every platform torch supports, and works on numpy views of torch
tensors without copies. A torch C++ extension would need a compiler at install or run time; ``torch.compile``
needs one too (Inductor emits C++) and cannot express the LFSR recurrences.

Random numbers
--------------
The host quantizer and the fast emulator draw one 64-bit word per element from ``splitmix64`` used as a
counter-based generator: word ``i`` of a call with key ``k`` is the splitmix64 finaliser of
``k + (i + 1) * 0x9E3779B97F4A7C15``, exactly the ``i``-th output of a splitmix64 stream seeded with ``k`` (a
generator that passes BigCrush). The key is drawn from the caller's :class:`torch.Generator` (one ``randint`` per
call), so seeding, checkpointing and resuming that generator still fix every rounding.

* quantizer: ``u = (word >> 11) * 2**-53`` is uniform on the ``2**-53`` grid of ``[0, 1)``; an element rounds
  up when ``u < frac`` with ``frac = y - floor(y)`` computed exactly in float64, so P(round up) equals the
  fraction to within ``2**-53`` and values on the grid (``frac = 0``) never move;
* fast emulator: the offset is the top ``s`` bits of the word, uniform on the integers ``[0, 2**s)``.

The exact emulator's offsets are the LFSR lane words of ``docs/numerics.md`` §4, §6, made inside
:func:`lanes_round` by applying the leap map of :class:`fxtrain.sim.lfsr.LeapMap` (as byte lookup tables built
from its ``columns``) lane by lane, in the engine's tile order.

Members
-------
set_threads
    Number of threads of the kernels (default: follow ``torch.get_num_threads()``).
draw_key
    A 64-bit key from a :class:`torch.Generator`.
quantize_into
    Fused quantizer: scale, offset, floor, saturate, count, write raw or dequantized values.
round_into
    Fused rounder of the fast emulator: accumulator + random or nearest offset, shift, saturate, count.
lanes_round
    Fused rounder of the exact emulator: LFSR lane words generated in tile order, shift, saturate, count.
lane_words
    Consecutive words of one lane (compiled; equal to :func:`fxtrain.sim.lfsr.lane_words`).
leap_tables
    Byte lookup tables of a lane's leap map (from :class:`fxtrain.sim.lfsr.LeapMap`).
"""

from __future__ import annotations

import os
import types
from functools import lru_cache

import numba as nb
import numpy as np
import torch

from ..sim.lfsr import LeapMap, lane_advance

__all__ = ["set_threads", "draw_key", "quantize_into", "round_into", "lanes_round", "leap_tables", "lane_words"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 15  # elements per parallel work item; results do not depend on it

_threads = None

# numba's "omp" layer (its default here) starts a second OpenMP runtime beside the one bundled with torch; with both
# loaded, set_num_threads did not take effect and the quantizer ran 4x slower (87 vs 375 M elements/s, 1 thread).
# The "workqueue" layer has no such interaction. The kernels are only called from one Python thread at a time.
if "NUMBA_THREADING_LAYER" not in os.environ:
    nb.config.THREADING_LAYER = "workqueue"


def set_threads(count=None) -> None:
    """Threads the kernels use: ``count``, or (``None``) follow ``torch.get_num_threads()`` at each call."""
    global _threads
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f"Thread count must be a positive integer or None, not {count!r}")
    _threads = count


def _sync_threads():
    """Thread count for the next kernel call (set on numba's pool)."""
    want = _threads if _threads is not None else torch.get_num_threads()
    want = max(1, min(want, nb.config.NUMBA_NUM_THREADS))
    if want > 1 and nb.get_num_threads() != want:
        nb.set_num_threads(want)
    return want


class _Kernel:
    """A loop nest compiled twice: serially (``prange`` acts as ``range``) and for numba's thread pool. Waking the
    pool costs ~0.1 ms on a busy machine, so the serial version runs for one thread and for small inputs; both
    give identical results (every element's result depends only on its index and the key)."""

    def __init__(self, func, min_parallel):
        self.serial = nb.njit(cache=True, nogil=True)(func)
        # A copy under another name: numba's on-disk cache is keyed by the function's name, not its flags.
        twin = types.FunctionType(func.__code__, func.__globals__, func.__name__ + "_parallel")
        twin.__qualname__ = func.__qualname__ + "_parallel"
        self.parallel = nb.njit(parallel=True, cache=True, nogil=True)(twin)
        self.min_parallel = min_parallel

    def __call__(self, size, *args):
        if size >= self.min_parallel and _sync_threads() > 1:
            return self.parallel(*args)
        return self.serial(*args)


def draw_key(generator=None) -> int:
    """A uniformly random 64-bit key (as a non-negative int) drawn from ``generator`` (torch's default if None)."""
    word = torch.randint(-(1 << 63), (1 << 63) - 1, (1,), generator=generator, dtype=torch.int64)
    return int(word) & 0xFFFFFFFFFFFFFFFF


@nb.njit(inline="always")
def _word(key, i):
    z = key + np.uint64(i + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@nb.njit(inline="always")
def _quantize_chunk(x, out, start, stop, scale, lo, hi, out_scale, stochastic, key):
    # Branch-free loop bodies, so LLVM vectorises them (AVX-512: 8 elements per instruction, vpmullq for the hash).
    sat = 0
    bad = 0
    if stochastic:
        for i in range(start, stop):
            y = np.float64(x[i]) * scale  # exact: scale is a power of two
            f = np.floor(y)
            u = np.float64(np.int64(_word(key, i) >> np.uint64(11))) * 1.1102230246251565e-16  # 2**-53 grid
            r = f + np.float64(u < y - f)  # y - f is exact; NaN for +-Inf, which never rounds up
            sat += (r < lo) | (r > hi)
            bad += r != r
            out[i] = min(max(r, lo), hi) * out_scale
    else:
        for i in range(start, stop):
            r = np.ceil(np.float64(x[i]) * scale - 0.5)  # exact for float32 input, torch's formula for float64
            sat += (r < lo) | (r > hi)
            bad += r != r
            out[i] = min(max(r, lo), hi) * out_scale
    return sat, bad


def _quantize_kernel(x, out, scale, lo, hi, out_scale, stochastic, key):
    n = x.size
    chunks = (n + _CHUNK - 1) // _CHUNK
    counts = np.zeros((chunks, 2), dtype=np.int64)  # per-chunk counts: no shared reduction variable
    for c in nb.prange(chunks):
        sat, bad = _quantize_chunk(x, out, c * _CHUNK, min(n, (c + 1) * _CHUNK), scale, lo, hi, out_scale,
                                   stochastic, key)
        counts[c, 0] = sat
        counts[c, 1] = bad
    return counts[:, 0].sum(), counts[:, 1].sum()


_QUANTIZE = _Kernel(_quantize_kernel, 2 * _CHUNK)


def quantize_into(x: np.ndarray, out: np.ndarray, fl: int, lo: int, hi: int, out_scale: float,
                  stochastic: bool, key: int = 0):
    """One pass: ``out = sat(round(x * 2**fl)) * out_scale``; returns ``(saturated, nans)`` counts.

    ``x`` and ``out`` are contiguous 1-D float32/float64 arrays of equal size (``out`` may be ``x``).
    ``round`` is ``ceil(y - 1/2)`` (nearest, ties toward minus infinity) or ``floor(y + u)`` with ``u`` from
    the counter-based generator keyed by ``key`` (module docstring). NaN elements are written as NaN and counted.
    """
    return _QUANTIZE(x.size, x, out, float(2.0 ** fl), float(lo), float(hi), float(out_scale), bool(stochastic),
                            np.uint64(key))


def _round_kernel(acc, out, sat_mask, shift, lo, hi, stochastic, key):
    m, n = acc.shape
    nearest = (np.int64(1) << np.int64(shift - 1)) - 1 if shift > 0 else np.int64(0)
    drop = np.uint64(64 - shift)
    counts = np.zeros(m, dtype=np.int64)
    for r in nb.prange(m):
        sat = 0
        for j in range(n):
            a = np.int64(acc[r, j])  # exact: the accumulation is exact and below 2**53
            if stochastic and shift > 0:
                off = np.int64(_word(key, r * n + j) >> drop)
            else:
                off = nearest
            t = (a + off) >> np.int64(shift)
            flag = False
            if t < lo:
                t = lo
                flag = True
            elif t > hi:
                t = hi
                flag = True
            sat += flag
            sat_mask[r, j] = flag
            out[r, j] = t
        counts[r] = sat
    return counts.sum()


_ROUND = _Kernel(_round_kernel, 1 << 16)


def round_into(acc: np.ndarray, out: np.ndarray, sat_mask: np.ndarray, shift: int, wl: int, stochastic: bool,
               key: int = 0) -> int:
    """Rounder of the fast emulator, one pass: ``out = sat_wl((acc + offset) >> shift)``, ``sat_mask`` set where
    it saturated; returns the saturation count. ``acc`` is M x N float64 holding exact integers below 2**53;
    ``out`` M x N float32/float64/int64; the offset is the nearest one of numerics §3 or uniform on
    ``[0, 2**shift)`` from the counter-based generator keyed by ``key``."""
    return _ROUND(acc.size, acc, out, sat_mask, int(shift), -(1 << (wl - 1)), (1 << (wl - 1)) - 1, bool(stochastic),
                         np.uint64(key))


@lru_cache(maxsize=None)
def leap_tables(width: int, leap: "int | None" = None) -> np.ndarray:
    """``tables[b, v]``: the image under the lane's leap map of byte value ``v`` placed at byte ``b`` of a state
    (XOR of the map's ``columns``), so ``L(s) = XOR_b tables[b, (s >> 8b) & 255]`` by linearity over GF(2)."""
    leap_map = LeapMap(width, width if leap is None else leap)
    nbytes = (width + 7) // 8
    tables = np.zeros((nbytes, 256), dtype=np.uint64)
    values = np.arange(256, dtype=np.uint64)
    for j, column in enumerate(leap_map.columns):
        byte, bit = divmod(j, 8)
        tables[byte] ^= np.where((values >> np.uint64(bit)) & np.uint64(1), np.uint64(column), np.uint64(0))
    tables.setflags(write=False)
    return tables


@nb.njit(inline="always")
def _leap(tables, state):
    out = np.uint64(0)
    for b in range(tables.shape[0]):
        out ^= tables[b, (state >> np.uint64(8 * b)) & np.uint64(0xFF)]
    return out


@nb.njit(cache=True, nogil=True)
def _lane_words_kernel(tables, state, out):
    for i in range(out.size):
        state = _leap(tables, state)
        out[i] = state
    return state


def lane_words(state: int, count: int, width: int, leap: "int | None" = None):
    """``count`` consecutive words of a lane from ``state`` and the state afterwards, like
    :func:`fxtrain.sim.lfsr.lane_words` (compiled, sequential)."""
    out = np.empty(count, dtype=np.uint64)
    new_state = _lane_words_kernel(leap_tables(width, leap), np.uint64(state), out)
    return out, int(new_state) if count else int(state)


def _lanes_kernel(acc, out, sat_mask, starts, block_tiles, tables, rows, cols, shift, lo, hi, stochastic):
    # starts[blk, j]: state of lane j before tile row blk * block_tiles (jumped ahead by the caller); blocks of
    # tile rows are independent work items.
    m, n = acc.shape
    mt = (m + rows - 1) // rows
    nt = (n + cols - 1) // cols
    nearest = (np.int64(1) << np.int64(shift - 1)) - 1 if shift > 0 else np.int64(0)
    mask = (np.uint64(1) << np.uint64(shift)) - np.uint64(1)
    nblocks = starts.shape[0]
    counts = np.zeros(nblocks, dtype=np.int64)
    for blk in nb.prange(nblocks):
        sat = 0
        for j in range(cols):
            state = starts[blk, j]
            for tm in range(blk * block_tiles, min(mt, (blk + 1) * block_tiles)):
                for tn in range(nt):
                    col = tn * cols + j
                    for r in range(rows):
                        row = tm * rows + r
                        if stochastic:
                            state = _leap(tables, state)  # advance, then use (numerics §4.2)
                            off = np.int64(state & mask)
                        else:
                            off = nearest
                        if row < m and col < n:
                            t = (np.int64(acc[row, col]) + off) >> np.int64(shift)
                            flag = (t < lo) | (t > hi)
                            sat += flag
                            sat_mask[row, col] = flag
                            out[row, col] = min(max(t, lo), hi)
            if blk == nblocks - 1:
                starts[blk, j] = state
        counts[blk] = sat
    return counts.sum()


_LANES = _Kernel(_lanes_kernel, 1 << 14)


def lanes_round(acc: np.ndarray, out: np.ndarray, sat_mask: np.ndarray, lane_state: np.ndarray, rows: int,
                cols: int, shift: int, wl: int, stochastic: bool, width: int) -> int:
    """Rounder of the exact emulator, one pass (numerics §3, §6): output ``(tm*rows + r, tn*cols + j)`` is
    rounded with the next word of lane ``j``, tiles in row-major order, rows in order within a tile, padded
    outputs advancing the lane too. ``acc`` is M x N (float64 holding exact integers, or int64);
    ``lane_state`` (uint64, one per lane) is updated in place in stochastic mode (the caller advances the lanes
    in nearest mode, where no word is read). Returns the saturation count.

    With several threads the tile rows are cut into one block per thread, each starting from lane states jumped
    ahead with :func:`fxtrain.sim.lfsr.lane_advance`; the words, hence the results, are the same.
    """
    m, n = acc.shape
    mt, nt = -(-m // rows), -(-n // cols)
    threads = _sync_threads() if stochastic and acc.size >= _LANES.min_parallel else 1
    block_tiles = -(-mt // threads)
    nblocks = -(-mt // block_tiles)
    starts = np.empty((nblocks, cols), dtype=np.uint64)
    for blk in range(nblocks):
        for j in range(cols):
            starts[blk, j] = (int(lane_state[j]) if blk == 0 else
                              lane_advance(int(lane_state[j]), blk * block_tiles * nt * rows, width))
    count = _LANES(acc.size if nblocks > 1 else 0, acc, out, sat_mask, starts, block_tiles, leap_tables(width),
                   int(rows), int(cols), int(shift), -(1 << (wl - 1)), (1 << (wl - 1)) - 1, bool(stochastic))
    if stochastic:
        lane_state[:] = starts[-1]
    return count
