"""The rounder: wide signed accumulator to a saturated ``WL``-bit word (``docs/numerics.md`` §3, §5).

Golden model: :func:`fxtrain.sim.rounding.round_shift`.

Members
-------
StochasticRounder
    Two-stage pipelined offset-add, arithmetic shift and saturation, nearest or stochastic.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sim.fixedpoint import MAX_WL
from ..sim.lfsr import LANE_WIDTH
from ..sim.rounding import SHIFT_MAX

__all__ = ["StochasticRounder"]


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"Rounder {name} must be an integer {bound}, not {value!r}")


class StochasticRounder(wiring.Component):
    """Round a signed accumulator to ``wl`` bits by discarding ``shift`` fraction bits (§3).

    Arithmetic, exactly :func:`fxtrain.sim.rounding.round_shift`::

        offset = rand mod 2**shift                               (mode = 1, stochastic)
               = 2**(shift-1) - 1 if shift > 0 else 0            (mode = 0, nearest, ties toward -inf)
        t      = (acc + offset) >> shift                         (arithmetic shift: floor division)
        out    = clamp(t, -2**(wl-1), 2**(wl-1) - 1)
        sat    = out != t

    The offset addition is exact (the sum is wide enough for any ``acc`` and offset), so nothing wraps.

    Pipeline (fully pipelined, one value per cycle, no back-pressure), ``latency = 2``:

    * stage 1 (register after): offset select and ``acc + offset``; ``shift``, ``i_valid`` and the mask of the
      sum bits at or above ``shift + wl - 1`` travel along;
    * stage 2 (register after): saturation (those sum bits not all equal to the sign) in parallel with the low
      ``wl`` bits of the arithmetic shift, to ``out``/``sat``/``o_valid``.

    ``acc`` and ``rand`` are sampled in the cycle ``i_valid`` is high, ``shift`` and ``mode`` ``shift_setup``
    cycles earlier (0: in the same cycle); the result of an input presented in cycle ``t`` is on ``out``/``sat``
    with ``o_valid`` high in cycle ``t + 2``. ``out`` and ``sat`` are computed every cycle regardless of
    ``i_valid`` (``i_valid`` only travels to ``o_valid``).

    ``shift_setup = 1`` (the engine's choice, except on iCE40: its ``shift`` and ``mode`` are registers changing
    only when a run is accepted, at least 3 cycles before its first rounding) registers ``shift``, ``mode`` and the decoded
    thermometer mask ``2**shift - 1`` in a stage 0 of their own, so the wide addition of stage 1 starts from
    flip-flops: one LUT per offset bit (mode, rand bit, two mask bits) before the carry chain, no shift
    comparison. The latency of ``acc``/``rand``/``i_valid`` to ``out``/``sat``/``o_valid`` stays 2; only the
    rounding parameters are taken one cycle earlier. Extra cost: ``shift_max + bits(shift) + 1`` flip-flops.

    Parameters
    ----------
    wl : int
        Output word length, 2 to ``MAX_WL`` (16).
    acc_width : int
        Accumulator width in bits (at least ``wl``).
    shift_max : int
        Largest shift, 0 to ``SHIFT_MAX`` (32); it fixes the width of the ``shift`` port, so larger shifts
        cannot be presented. Default ``SHIFT_MAX``.
    rand_width : int
        Width of the random word (at least ``shift_max``; default ``LANE_WIDTH``, 32).
    shift_setup : int
        0 or 1: cycles by which ``shift`` and ``mode`` precede the input they apply to (default 0).

    Raises
    ------
    ValueError
        If a parameter is out of range; the message names the value.

    Members
    -------
    i_valid : In(1)
        An input is presented this cycle.
    acc : In(signed(acc_width))
        Accumulator value.
    rand : In(rand_width)
        Random word of the rounder's LFSR lane (only its low ``shift`` bits matter, stochastic mode only).
    shift : In(range(shift_max + 1))
        Fraction bits to discard.
    mode : In(1)
        0 nearest, 1 stochastic (:class:`fxtrain.sim.rounding.RoundingMode`).
    o_valid : Out(1)
        ``i_valid`` delayed by ``latency``.
    out : Out(signed(wl))
        Rounded, saturated word.
    sat : Out(1)
        The word was clamped.
    latency : int
        2.
    wl, acc_width, shift_max, rand_width, shift_setup : int
        The parameters.
    """

    latency = 2

    def __init__(self, wl, acc_width, *, shift_max=SHIFT_MAX, rand_width=LANE_WIDTH, shift_setup=0):
        _check_int("word length", wl, 2, MAX_WL)
        _check_int("accumulator width", acc_width, wl)
        _check_int("shift_max", shift_max, 0, SHIFT_MAX)
        _check_int("rand_width", rand_width, max(1, shift_max))
        _check_int("shift_setup", shift_setup, 0, 1)
        self.shift_setup = shift_setup
        self.wl = wl
        self.acc_width = acc_width
        self.shift_max = shift_max
        self.rand_width = rand_width
        super().__init__({
            "i_valid": In(1),
            "acc": In(signed(acc_width)),
            "rand": In(rand_width),
            "shift": In(range(shift_max + 1)),
            "mode": In(1),
            "o_valid": Out(1),
            "out": Out(signed(wl)),
            "sat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        smax = self.shift_max

        # Stage 0 (shift_setup = 1 only): shift, mode and keep (below) registered one cycle ahead of the input.
        shift, mode = self.shift, self.mode
        if self.shift_setup:
            shift, mode = Signal.like(self.shift), Signal()
            m.d.sync += [shift.eq(self.shift), mode.eq(self.mode)]

        # Stage 1: offset and exact sum.
        # keep[i] = (i < shift): the thermometer mask 2**shift - 1 of the discarded bits.
        if smax > 0:
            keep = Signal(smax)
            decoded = Cat(self.shift > i for i in range(smax))
            if self.shift_setup:
                m.d.sync += keep.eq(decoded)
            else:
                m.d.comb += keep.eq(decoded)
            nearest = keep[1:] if smax > 1 else 0          # 2**(shift-1) - 1, or 0 for shift = 0
            stochastic = self.rand[:smax] & keep            # rand mod 2**shift
            offset = Signal(smax)
            m.d.comb += offset.eq(Mux(mode, stochastic, nearest))
            total = self.acc + offset
        else:
            total = self.acc
        sum1 = Signal(signed(max(self.acc_width, smax + 1) + 1))
        width = len(sum1)
        # top_mask[i] = (i >= shift + wl - 1): the bits of the sum that must all equal its sign for the shifted
        # value to fit in wl bits; computed from shift in stage 1 so stage 2 needs no wide shifter. It is the
        # complement of the thermometer ``keep`` moved up by wl - 1 bits (0 below, 1 above shift_max + wl - 1).
        top_mask = Signal(width)
        m.d.comb += top_mask.eq(Cat(
            0 if i < self.wl - 1 else 1 if i - (self.wl - 1) >= smax else ~keep[i - (self.wl - 1)]
            for i in range(width)))
        shift1 = Signal.like(self.shift)
        mask1 = Signal(width)
        valid1 = Signal()
        m.d.sync += [sum1.eq(total), shift1.eq(shift), mask1.eq(top_mask), valid1.eq(self.i_valid)]

        # Stage 2: saturation test (parallel) and the low wl bits of the arithmetic shift.
        sign = sum1[width - 1]
        overflow = ((sum1.as_unsigned() ^ sign.replicate(width)) & mask1).any()
        shifted = Signal(signed(self.wl))
        # (sum1 >> shift1)[:wl] as a logarithmic shifter over only the bits that can reach the output (bit i of
        # the result is sum1[i + shift1], sign-extended; i + shift1 < wl + shift_max): one 2:1 multiplexer per bit
        # per stage, largest step first, each stage keeping the wl + 2**b - 1 bits the smaller steps can reach.
        reach = self.wl + smax
        window = Cat(sum1.as_unsigned(), sum1[width - 1].replicate(max(0, reach - width)))[:reach]
        for b in reversed(range(len(shift1))):
            keep_bits = self.wl + (1 << b) - 1
            window = Mux(shift1[b], window[1 << b:], window)[:keep_bits]
        m.d.comb += shifted.eq(window)
        low, high = -(1 << (self.wl - 1)), (1 << (self.wl - 1)) - 1
        m.d.sync += [
            self.out.eq(Mux(overflow, Mux(sign, low, high), shifted)),
            self.sat.eq(overflow),
            self.o_valid.eq(valid1),
        ]
        return m
