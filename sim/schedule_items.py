"""The schedule items of the GEMM planner: the commands :meth:`fxtrain.sim.planner.CommandPlanner.schedule`
yields for one GEMM, which the host driver sends (:class:`fxtrain.host.device.Device`), the golden model plays
(:func:`fxtrain.sim.engine.play_item`) and the time model counts (:class:`fxtrain.host.traffic.DriverReplay`).

Members
-------
SetRounding, WriteOperand, Reused, Run, ReadResult, RunTiles
    Schedule items (``Reused`` is no command: it reports entries found resident).
WriteMap, Expand
    Convolution mode: a feature map written to the B memory, an EXPAND.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import conv
from .gemm_plan import Chunk, TileGroup
from .payloads import RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE

__all__ = ["SetRounding", "WriteOperand", "Reused", "Run", "ReadResult", "RunTiles", "WriteMap", "Expand"]


@dataclass(frozen=True)
class SetRounding:
    """Set the rounding registers to ``rounding`` (the ``(shift, mode)`` the planner was given)."""

    rounding: object


@dataclass(frozen=True)
class WriteOperand:
    """Write the entries of operand ``which`` (``"A"``: tile row ``index``; ``"B"``: tile columns ``index ..
    index + count - 1``, one after another) of ``chunk`` at ``addr``."""

    which: str
    addr: int
    index: int
    chunk: Chunk
    count: int = 1

    @property
    def entries(self):
        return self.chunk.length * self.count


@dataclass(frozen=True)
class Reused:
    """``entries`` entries of operand ``which`` were found resident (nothing is sent)."""

    which: str
    entries: int


@dataclass(frozen=True)
class Run:
    """RUN of ``k`` entries with A at ``a_base``, B at ``b_base`` and RUN ``flags``; ``slot`` is the partial-sum
    slot a LOAD or SAVE run uses (0 otherwise)."""

    a_base: int
    b_base: int
    k: int
    flags: int
    slot: int = 0

    @property
    def clear(self):
        return bool(self.flags & RUN_CLEAR)

    @property
    def drain(self):
        return bool(self.flags & RUN_DRAIN)

    @property
    def load(self):
        return bool(self.flags & RUN_LOAD)

    @property
    def save(self):
        return bool(self.flags & RUN_SAVE)


@dataclass(frozen=True)
class ReadResult:
    tm: int
    tn: int


@dataclass(frozen=True)
class RunTiles:
    """RUN_TILES of ``group``: its tiles run with A at ``a_base`` and B at ``b_base + t * b_step``."""

    a_base: int
    b_base: int
    b_step: int
    k: int
    group: TileGroup

    @property
    def n_tiles(self):
        return self.group.count


@dataclass(frozen=True)
class WriteMap:
    """Write the feature map of ``view`` (``conv.fmap_pack``: ``entries`` B entries) at B address ``addr``."""

    addr: int
    entries: int
    view: object


@dataclass(frozen=True)
class Expand:
    """EXPAND: ``blocks`` A chunks of ``count`` entries at ``a_base`` for virtual rows from ``row0`` and columns
    from ``k0`` of ``view``'s matrix, the map at B entry ``f_base`` (``conv.expand_args``)."""

    a_base: int
    f_base: int
    row0: int
    k0: int
    count: int
    blocks: int
    view: object

    @property
    def entries(self):
        return self.count * self.blocks

    def args(self, config):
        """The EXPAND payload."""
        return conv.expand_args(config, self.view.geom, transposed=self.view.transposed, row0=self.row0,
                                k0=self.k0, count=self.count, blocks=self.blocks, a_base=self.a_base,
                                f_base=self.f_base)

