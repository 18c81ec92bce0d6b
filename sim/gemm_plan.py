"""The tiling of one GEMM: how an ``M x K x N`` GEMM is cut into output tiles, K chunks and RUN flags
(``docs/numerics.md`` §6, ``docs/protocol.md`` §3). The command planner (:mod:`.planner`) turns a plan into a
command schedule.

Plan (:class:`GemmPlan`): ``A`` is zero-padded to ``Mp = rows * ceil(M / rows)`` rows and ``B`` to
``Np = cols * ceil(N / cols)`` columns; output tiles go ``tm`` outer, ``tn`` inner; K is split into chunks of at
most ``chunk`` (default ``depth``) entries; a tile's first run has ``clear``, its last ``drain`` and the runs in
between neither, so a K-split keeps accumulating at full width and only the complete sum is rounded.

Tile loop (``docs/protocol.md`` §3, RUN_TILES): when K fits one chunk (``K <= chunk``), the tiles of a tile row go
to the device in *groups* of consecutive columns ``tn0 .. tn0 + count - 1`` (:attr:`GemmPlan.groups`; ``count`` at
most ``b_depth // K`` so that the group's B chunks lie one after another in B memory, and at most
``sim.payloads.max_tiles`` so that one response carries them).

Partial-sum memory (``EngineConfig.psum_slots >= 1``): a K-split played *chunk-outer* (:mod:`.planner`) cuts the
tiles into groups of at most ``psum_slots`` consecutive tiles of the plain order (:meth:`GemmPlan.psum_groups`;
fewer when the B memory cannot hold one chunk of every tile column of the group), whose runs carry CLEAR or LOAD
and DRAIN or SAVE (:meth:`GemmPlan.psum_flags`).

Members
-------
Chunk, GemmPlan, plan_gemm
    The tiling of one GEMM.
TileGroup
    Consecutive output tiles of one tile row that one RUN_TILES computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .gemm import EngineConfig
from .payloads import RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE, max_tiles

__all__ = ["Chunk", "TileGroup", "GemmPlan", "plan_gemm"]


@dataclass(frozen=True)
class Chunk:
    """K entries ``k0 .. k1 - 1`` of a GEMM (one run of a tile)."""

    k0: int
    k1: int

    @property
    def length(self):
        return self.k1 - self.k0


@dataclass(frozen=True)
class TileGroup:
    """Output tiles ``(tm, tn0) .. (tm, tn0 + count - 1)``; ``first`` is the index of the first in the plan's
    tile order."""

    tm: int
    tn0: int
    count: int
    first: int

    @property
    def tiles(self):
        return [(self.tm, tn) for tn in range(self.tn0, self.tn0 + self.count)]


class GemmPlan:
    """The tiling of one ``M x K x N`` GEMM on an engine of ``config`` (module docstring).

    Members
    -------
    m, k, n, mt, nt, mp, np_ : int
        Shape, tile counts and padded sizes.
    chunks : tuple of Chunk
    tiles : list of (tm, tn)
        Output tiles in order.
    groups : list of TileGroup or None
        The RUN_TILES groups covering ``tiles`` in order (module docstring), or ``None`` for a K-split or when
        ``tile_loop`` is off.
    flags(chunk) -> int
        RUN flags of a chunk (``RUN_CLEAR`` on the first, ``RUN_DRAIN`` on the last).
    pad(a, b) -> (ap, bp); a_block(ap, tm, chunk); b_block(bp, tn, chunk, count=1)
        Operand entries of a chunk (``k x rows`` columns of an A tile, ``k x cols`` rows of a B tile; ``count``
        consecutive B tiles one after another).
    tile_slices(tm, tn) -> (rows slice, cols slice)
        Where a tile's result goes in the padded ``Mp x Np`` output.
    """

    def __init__(self, config, m, k, n, chunk=None, tile_loop=True):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        for name, value in (("M", m), ("K", k), ("N", n)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GEMM dimension {name} must be a positive integer, not {value!r}")
        if k > config.max_k:
            raise ValueError(f"K = {k} exceeds the engine's maximum K {config.max_k}")
        chunk = config.depth if chunk is None else chunk
        if not isinstance(chunk, int) or not 1 <= chunk <= config.depth:
            raise ValueError(f"K chunk must be an integer from 1 to the depth {config.depth}, not {chunk!r}")
        self.config = config
        self.m, self.k, self.n = int(m), int(k), int(n)
        self.mt, self.nt = -(-self.m // config.rows), -(-self.n // config.cols)
        self.mp, self.np_ = self.mt * config.rows, self.nt * config.cols
        self.chunks = tuple(Chunk(k0, min(self.k, k0 + chunk)) for k0 in range(0, self.k, chunk))
        self.tiles = [(tm, tn) for tm in range(self.mt) for tn in range(self.nt)]
        self.groups = None
        if tile_loop and len(self.chunks) == 1:
            per = min(self.nt, config.b_depth // self.k, max_tiles(config))
            self.groups = [TileGroup(tm, tn0, min(per, self.nt - tn0), tm * self.nt + tn0)
                           for tm in range(self.mt) for tn0 in range(0, self.nt, per)]

    def flags(self, chunk):
        return (RUN_CLEAR if chunk.k0 == 0 else 0) | (RUN_DRAIN if chunk.k1 == self.k else 0)

    def psum_flags(self, chunk):
        """RUN flags of a chunk in the chunk-outer schedule: CLEAR on the first chunk else LOAD, DRAIN on the
        last else SAVE."""
        return ((RUN_CLEAR if chunk.k0 == 0 else RUN_LOAD) | (RUN_DRAIN if chunk.k1 == self.k else RUN_SAVE))

    def psum_groups(self, slots, b_room):
        """The tile groups ``[(first, count)]`` of the chunk-outer schedule (module docstring): ``count`` at most
        ``slots`` consecutive tiles of :attr:`tiles`, and, when a group cannot cover every tile column, at most
        as many as B chunks fit in ``b_room`` entries (``count`` consecutive tiles have at most ``count``
        columns), so that one chunk of every column of the group stays resident through a chunk pass."""
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"psum_slots must be a positive integer for a chunk-outer schedule, not {slots!r}")
        fit = b_room // self.chunks[0].length
        per = slots if fit >= self.nt else max(1, min(slots, fit))
        return [(first, min(per, len(self.tiles) - first)) for first in range(0, len(self.tiles), per)]

    def pad(self, a, b):
        ap = np.zeros((self.mp, self.k), dtype=np.int64)
        ap[:self.m] = a
        bp = np.zeros((self.k, self.np_), dtype=np.int64)
        bp[:, :self.n] = b
        return ap, bp

    def a_block(self, ap, tm, chunk):
        rows = self.config.rows
        return ap[tm * rows:(tm + 1) * rows, chunk.k0:chunk.k1].T

    def b_block(self, bp, tn, chunk, count=1):
        cols = self.config.cols
        if count == 1:
            return bp[chunk.k0:chunk.k1, tn * cols:(tn + 1) * cols]
        return np.concatenate([bp[chunk.k0:chunk.k1, t * cols:(t + 1) * cols] for t in range(tn, tn + count)])

    def tile_slices(self, tm, tn):
        rows, cols = self.config.rows, self.config.cols
        return slice(tm * rows, (tm + 1) * rows), slice(tn * cols, (tn + 1) * cols)


def plan_gemm(config, m, k, n, chunk=None, tile_loop=True):
    """The :class:`GemmPlan` of an ``M x K x N`` GEMM (K chunks of ``chunk``, default the depth; RUN_TILES
    groups unless ``tile_loop`` is off)."""
    return GemmPlan(config, m, k, n, chunk, tile_loop)

