"""One multiply-accumulate processing element of the systolic array (``docs/numerics.md`` §5).

Golden model: :func:`fxtrain.sim.pe.pe_accumulate` (the exact dot product) and, cycle by cycle,
:class:`fxtrain.sim.pe_model.PECycleModel`.

Members
-------
MACProcessingElement
    Registered exact multiply, wide accumulate, systolic forwarding of operands, drain shift chain.

The multiply is :class:`fxtrain.rtl.multiplier.RegisteredMultiplier`: an Amaranth product into a flip-flop
register (simulation, iCE40 SB_MAC16) or, on ECP5, a MULT18X18D whose own output register is the product
register; both have latency 1 and the same arithmetic, so the PE's contract below holds for both.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sim.fixedpoint import MAX_WL
from .multiplier import RegisteredMultiplier

__all__ = ["MACProcessingElement", "MULTIPLIER_NAME"]

# Submodule name of the PE's multiplier (its $mul, or MULT18X18D instance, sits in module ``<pe>.mul``).
MULTIPLIER_NAME = "mul"


class MACProcessingElement(wiring.Component):
    """Exact multiply-accumulate PE with systolic forwarding (§5).

    Arithmetic, per clock edge::

        # stage 1 (multiplier output register; one DSP: SB_MAC16 / MULT18X18D's own output register)
        p, valid1, clear1 <= a_in * b_in, in_valid, in_clear        # p: exact signed 2*wl bits
        # stage 2 (accumulator)
        if shift_en:   acc <= shift_in                               # drain chain, has priority
        elif valid1:   acc <= (0 if clear1 else acc) + p
        # forwarding (systolic): a goes east, b goes south, valid/clear travel with a
        a_out, b_out, out_valid, out_clear <= a_in, b_in, in_valid, in_clear

    ``latency = 2``: a pair presented in cycle ``t`` is included in ``acc`` from cycle ``t + 2`` on (after the
    edge that ends cycle ``t + 1``). The forwarded outputs have latency 1. The accumulator wraps modulo
    ``2**acc_width``; with ``acc_width = accumulator_width(wl, max_k)`` no sum of at most ``max_k`` products
    overflows, so ``acc`` is the exact dot product. ``acc`` resets to 0.

    Parameters
    ----------
    wl : int
        Operand word length, 2 to ``MAX_WL`` (16).
    acc_width : int
        Accumulator width, at least ``2 * wl``.
    multiplier : str
        :class:`~fxtrain.rtl.multiplier.RegisteredMultiplier` kind: ``"auto"`` (MULT18X18D on an ECP5
        platform, generic otherwise), ``"generic"`` or ``"mult18x18d"``.

    Raises
    ------
    ValueError
        If a parameter is out of range; the message names the value.

    Members
    -------
    a_in, b_in : In(signed(wl))
        Operands presented this cycle.
    in_valid : In(1)
        The pair is a product to accumulate.
    in_clear : In(1)
        Start a new sum with this pair (the accumulator's old value is dropped).
    a_out, b_out : Out(signed(wl))
        ``a_in``, ``b_in`` delayed one cycle (to the east and south neighbours).
    out_valid, out_clear : Out(1)
        ``in_valid``, ``in_clear`` delayed one cycle (travel east with ``a``).
    acc : Out(signed(acc_width))
        The accumulator register.
    shift_in : In(signed(acc_width))
        Drain chain input (the accumulator of the PE below).
    shift_en : In(1)
        Take ``shift_in`` into ``acc`` at the next edge (priority over accumulation).
    latency : int
        2.
    wl, acc_width : int
        The parameters.
    """

    latency = 2

    def __init__(self, wl, acc_width, multiplier="auto"):
        if isinstance(wl, bool) or not isinstance(wl, int) or not 2 <= wl <= MAX_WL:
            raise ValueError(f"PE word length must be an integer from 2 to {MAX_WL}, not {wl!r}")
        if isinstance(acc_width, bool) or not isinstance(acc_width, int) or acc_width < 2 * wl:
            raise ValueError(f"PE accumulator width must be an integer of at least 2*wl = {2 * wl}, "
                             f"not {acc_width!r}")
        self.wl = wl
        self.acc_width = acc_width
        self._multiplier = RegisteredMultiplier(wl, multiplier)
        assert self._multiplier.latency + 1 == self.latency
        super().__init__({
            "a_in": In(signed(wl)),
            "b_in": In(signed(wl)),
            "in_valid": In(1),
            "in_clear": In(1),
            "a_out": Out(signed(wl)),
            "b_out": Out(signed(wl)),
            "out_valid": Out(1),
            "out_clear": Out(1),
            "acc": Out(signed(acc_width)),
            "shift_in": In(signed(acc_width)),
            "shift_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.b_out.eq(self.b_in),
            self.out_valid.eq(self.in_valid),
            self.out_clear.eq(self.in_clear),
        ]
        m.submodules[MULTIPLIER_NAME] = mul = self._multiplier
        m.d.comb += [mul.a.eq(self.a_in), mul.b.eq(self.b_in)]
        product = mul.p
        valid1 = Signal()
        clear1 = Signal()
        m.d.sync += [valid1.eq(self.in_valid), clear1.eq(self.in_clear)]
        with m.If(self.shift_en):
            m.d.sync += self.acc.eq(self.shift_in)
        with m.Elif(valid1):
            m.d.sync += self.acc.eq(Mux(clear1, 0, self.acc) + product)
        return m
