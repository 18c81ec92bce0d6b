"""The padded operands and the result of one GEMM on a device, filled tile by tile as the results arrive (in the
plan's tile order), whichever path sent it (:mod:`.device`: pipelined; :mod:`.recovery`: one request at a time).

Members
-------
GemmOutput
    ``ap``, ``bp`` (padded operands), ``c``, ``sat`` (padded result), ``received`` (tiles placed so far);
    ``block``/``digest`` (an operand chunk and its content digest), ``place_tile``, ``place`` (a READ_RESULT or
    RUN_TILES payload).
"""

from __future__ import annotations

import numpy as np

from ..sim.payloads import decode_tiles
from ..sim.residency import content_digest

__all__ = ["GemmOutput"]


class GemmOutput:
    """The padded operands and the result of one GEMM; tiles arrive in the plan's order."""

    def __init__(self, plan, ap, bp):
        self.plan, self.ap, self.bp = plan, ap, bp
        self.c = np.zeros((plan.mp, plan.np_), dtype=np.int64)
        self.sat = np.zeros((plan.mp, plan.np_), dtype=bool)
        self.received = 0

    def block(self, which, index, chunk, count=1):
        if which == "A":
            return self.plan.a_block(self.ap, index, chunk)
        return self.plan.b_block(self.bp, index, chunk, count)

    def digest(self, which, index, chunk):
        return content_digest(self.block(which, index, chunk))

    def place_tile(self, c, sat):
        rs, cs = self.plan.tile_slices(*self.plan.tiles[self.received])
        self.c[rs, cs], self.sat[rs, cs] = c, sat
        self.received += 1

    def place(self, payload):
        """Place the tiles of a READ_RESULT (one) or RUN_TILES (several) payload."""
        for tile in decode_tiles(self.plan.config, payload):
            self.place_tile(*tile)
