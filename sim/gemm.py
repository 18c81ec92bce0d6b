"""Golden model of the GEMM engine: configuration, one tile, and a whole tiled GEMM (``docs/numerics.md`` §6).

The engine is a ``rows x cols`` array of PEs (:mod:`.pe`) whose outputs leave through one rounder per column
(:mod:`.rounding`); column ``j``'s rounder draws its random words from LFSR lane ``j`` (:mod:`.lfsr`).

A tiled GEMM ``C = round(A @ B)`` of any ``M x K x N`` is defined as follows (the device, the RTL simulation
and the emulator all compute exactly this):

1. ``A`` is zero-padded to ``Mp = rows * ceil(M / rows)`` rows and ``B`` to ``Np = cols * ceil(N / cols)``
   columns. K is not padded (partial sums are never rounded; a K larger than the operand buffers is split
   into runs that keep accumulating, and only the last run rounds).
2. Output tiles are processed in row-major order: ``for tm in range(Mp // rows): for tn in range(Np // cols)``.
3. Within a tile, lane ``j`` rounds ``C[tm*rows + r, tn*cols + j]`` for ``r = 0, 1, ..., rows - 1`` in that
   order, advancing once before each rounding, in both rounding modes, padded outputs included.
4. Lane states persist from one GEMM to the next; only a seed write resets them.

Members
-------
EngineConfig
    Geometry and word length of an engine; the one source of truth for RTL, boards, host and time model.
GemmResult
    ``c`` (M x N raw results), ``saturated`` (M x N bool), ``lane_state`` (list of ints after the GEMM, or None
    from a backend that cannot read it back); the result type of every backend.
tile_gemm
    One tile: rows x K times K x cols.
tiled_gemm
    The whole GEMM above, vectorised and exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fixedpoint import MAX_WL
from .lfsr import LANE_WIDTH, check_lfsr, lane_advance, lane_words
from .pe import MAX_K_LOG2, accumulator_width, check_operands
from .rounding import RoundingMode, check_shift, parse_mode, round_shift

__all__ = ["EngineConfig", "GemmResult", "check_gemm", "tile_gemm", "tiled_gemm"]


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of a GEMM engine.

    Parameters
    ----------
    rows, cols : int
        Array geometry, 1 to 32 each.
    wl : int
        Operand and result word length, 2 to ``MAX_WL``.
    depth : int
        Entries of the A operand buffer: the largest K of one run (A entries are columns of an A tile). A power
        of two from 2 to 65536.
    b_depth : int or None
        Entries of the B operand buffer (B entries are rows of a B tile: the weights of the forward and
        input-gradient GEMMs, kept resident across calls). A power of two from ``depth`` to 65536; ``None``
        (default) means ``depth``. Deeper than A's on boards with a large memory next to the block RAM
        (iCE40UP5K SPRAM, ``rtl/operand_memory.py``); a run still covers at most ``depth`` entries.
    max_k_log2 : int
        ``log2`` of the largest K one output accumulates over all runs; sets the accumulator width.
    psum_slots : int
        Tiles the partial-sum memory holds (0 to 65535, default 0 = none): ``psum_slots`` sets of ``rows x cols``
        exact accumulators that a run can LOAD before its first product and SAVE after its last
        (``sim.engine``), so a K-split GEMM can go chunk by chunk over many tiles and send each operand once.
    expander : bool
        The device has convolution mode: the EXPAND command generates A entries from a feature map in the B
        memory (:mod:`.conv`, ``rtl/expander.py``). Default ``False``.

    Members
    -------
    acc_width : int
        Accumulator bits, ``2*wl + max_k_log2``.
    max_k : int
        ``2**max_k_log2``.
    lanes : int
        Number of LFSR lanes (one per column).
    lane_width : int
        Bits per lane (``LANE_WIDTH``).
    """

    rows: int = 4
    cols: int = 4
    wl: int = 16
    depth: int = 512
    max_k_log2: int = MAX_K_LOG2
    b_depth: "int | None" = None
    expander: bool = False
    psum_slots: int = 0
    lane_width: int = field(default=LANE_WIDTH, init=False)

    def __post_init__(self):
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 32:
                raise ValueError(f"Array {name} must be an integer from 1 to 32, not {value!r}")
        if not isinstance(self.wl, int) or not 2 <= self.wl <= MAX_WL:
            raise ValueError(f"Word length must be an integer from 2 to {MAX_WL}, not {self.wl!r}")
        if (not isinstance(self.depth, int) or not 2 <= self.depth <= 65536
                or self.depth & (self.depth - 1)):
            raise ValueError(f"Buffer depth must be a power of two from 2 to 65536, not {self.depth!r}")
        if self.b_depth is None:
            object.__setattr__(self, "b_depth", self.depth)
        if (isinstance(self.b_depth, bool) or not isinstance(self.b_depth, int)
                or not self.depth <= self.b_depth <= 65536 or self.b_depth & (self.b_depth - 1)):
            raise ValueError(f"B buffer depth b_depth must be a power of two from the A depth {self.depth} to "
                             f"65536, not {self.b_depth!r}")
        if isinstance(self.psum_slots, bool) or not isinstance(self.psum_slots, int) \
                or not 0 <= self.psum_slots <= 0xFFFF:
            raise ValueError(f"psum_slots must be an integer from 0 to 65535, not {self.psum_slots!r}")
        if not isinstance(self.expander, bool):
            raise ValueError(f"expander must be True or False, not {self.expander!r}")
        if not isinstance(self.max_k_log2, int) or not 1 <= self.max_k_log2 <= 24:
            raise ValueError(f"max_k_log2 must be an integer from 1 to 24, not {self.max_k_log2!r}")
        if self.max_k < self.depth:
            raise ValueError(f"max_k_log2 {self.max_k_log2} gives a maximum K below the buffer depth {self.depth}")

    @property
    def acc_width(self):
        return accumulator_width(self.wl, self.max_k)

    @property
    def max_k(self):
        return 1 << self.max_k_log2

    @property
    def lanes(self):
        return self.cols


@dataclass
class GemmResult:
    """The result of a GEMM, the one result type of every backend (``fxtrain.host.backend.Backend``).

    ``c``: M x N raw results (int64 numpy; a backend with ``accepts_torch`` returns a torch tensor for torch
    input); ``saturated``: M x N bool, like ``c``; ``lane_state``: the LFSR lane states after the GEMM where the
    backend knows them (the golden model, the exact emulator), else None; ``saturated_count``:
    ``int(saturated.sum())`` where the backend counted it anyway (the emulators' compiled rounders), else None.
    """

    c: "np.ndarray"
    saturated: "np.ndarray"
    lane_state: "list | None" = None
    saturated_count: "int | None" = None


def _check_lane_state(config, lane_state):
    lane_state = [int(s) for s in lane_state]
    if len(lane_state) != config.lanes:
        raise ValueError(f"Engine has {config.lanes} lanes, but {len(lane_state)} lane states were given")
    for s in lane_state:
        check_lfsr(config.lane_width, s)
    return lane_state


def check_gemm(config: EngineConfig, a, b, shift, mode, what="engine"):
    """Validate the arguments of a GEMM on an engine of ``config``; ValueError naming the bad value.

    Returns ``(a, b, shift, mode)`` as int64 arrays, an int and a :class:`RoundingMode`. ``what`` names the
    engine in the maximum-K message (``"engine"``, ``"device"``).
    """
    a = check_operands("A", a, config.wl)
    b = check_operands("B", b, config.wl)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"GEMM operands must be M x K and K x N matrices, not {a.shape} and {b.shape}")
    m, k = a.shape
    n = b.shape[1]
    if min(m, k, n) < 1:
        raise ValueError(f"GEMM dimensions must be at least 1, not M={m}, K={k}, N={n}")
    if k > config.max_k:
        raise ValueError(f"K = {k} exceeds the {what}'s maximum K {config.max_k} (max_k_log2={config.max_k_log2})")
    return a, b, check_shift(shift), parse_mode(mode)


def tiled_gemm(config: EngineConfig, a, b, shift, mode, lane_state) -> GemmResult:
    """``round(A @ B)`` on an engine of ``config``, exactly as the hardware computes it (module docstring)."""
    a, b, shift, mode = check_gemm(config, a, b, shift, mode)
    m, k = a.shape
    n = b.shape[1]
    lane_state = _check_lane_state(config, lane_state)
    rows, cols = config.rows, config.cols
    mt, nt = -(-m // rows), -(-n // cols)
    # float64 holds every partial sum exactly: |sum| <= K * 2**(2*wl-2) <= 2**(24+30) ... checked below
    if k * (1 << (2 * config.wl - 2)) < (1 << 53):
        acc = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    else:
        acc = a @ b
    count = mt * nt * rows
    if mode is RoundingMode.STOCHASTIC:
        rand = np.empty((cols, mt, nt, rows), dtype=np.uint64)
        new_state = []
        for j in range(cols):
            words, state = lane_words(lane_state[j], count, config.lane_width)
            rand[j] = words.reshape(mt, nt, rows)
            new_state.append(state)
        rand = rand.transpose(1, 3, 2, 0).reshape(mt * rows, nt * cols)[:m, :n]
    else:
        rand = None
        new_state = [lane_advance(s, count, config.lane_width) for s in lane_state]
    out, sat = round_shift(acc, shift, mode, rand, config.wl)
    return GemmResult(out, sat, new_state)


def tile_gemm(config: EngineConfig, a_tile, b_tile, shift, mode, lane_state) -> GemmResult:
    """One ``rows x K`` by ``K x cols`` tile (the unit one engine run produces)."""
    a_tile = np.asarray(a_tile)
    b_tile = np.asarray(b_tile)
    if a_tile.shape[0] != config.rows or b_tile.ndim != 2 or b_tile.shape[1] != config.cols:
        raise ValueError(f"A tile must be {config.rows} x K and B tile K x {config.cols}, "
                         f"not {a_tile.shape} and {b_tile.shape}")
    return tiled_gemm(config, a_tile, b_tile, shift, mode, lane_state)
