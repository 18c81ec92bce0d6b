"""Cycle model of one MAC processing element (``docs/numerics.md`` §5), the reference of ``rtl/pe.py``.

The arithmetic is :func:`fxtrain.sim.pe.pe_accumulate`; this model adds the register timing of
:class:`fxtrain.rtl.pe.MACProcessingElement` so benches can compare every output in every cycle.

Members
-------
PECycleModel
    Registers of the PE; :meth:`PECycleModel.tick` applies one clock edge.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PECycleModel"]


def _wrap(value, width):
    """``value`` as a ``width``-bit two's complement integer."""
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


@dataclass
class PECycleModel:
    """Register state of a PE; all fields are the values visible during the current cycle.

    Parameters
    ----------
    wl : int
        Operand word length.
    acc_width : int
        Accumulator width (the accumulator wraps modulo ``2**acc_width``, as the register does).

    Members
    -------
    acc, a_out, b_out, out_valid, out_clear : int
        Output registers.
    product, valid1, clear1 : int
        Multiplier stage registers.
    tick
        One clock edge given this cycle's inputs.
    """

    wl: int
    acc_width: int
    acc: int = 0
    a_out: int = 0
    b_out: int = 0
    out_valid: int = 0
    out_clear: int = 0
    product: int = 0
    valid1: int = 0
    clear1: int = 0

    def tick(self, a_in, b_in, in_valid, in_clear, shift_in=0, shift_en=0):
        """Apply one rising edge with the inputs held during the cycle before it."""
        if shift_en:
            acc = shift_in
        elif self.valid1:
            acc = (0 if self.clear1 else self.acc) + self.product
        else:
            acc = self.acc
        self.acc = _wrap(acc, self.acc_width)
        self.product, self.valid1, self.clear1 = a_in * b_in, int(in_valid), int(in_clear)
        self.a_out, self.b_out, self.out_valid, self.out_clear = a_in, b_in, int(in_valid), int(in_clear)

    def outputs(self):
        """The output ports as a dict (names of the RTL ports)."""
        return {"acc": self.acc, "a_out": self.a_out, "b_out": self.b_out, "out_valid": self.out_valid,
                "out_clear": self.out_clear}
