"""Output-stationary systolic array of ``rows x cols`` multiply-accumulate PEs with input skew and drain chains.

Dataflow (``docs/engine.md`` has the picture): every cycle the array takes one column of an A tile
(``a_in[r] = A[r, i]``) and one row of a B tile (``b_in[j] = B[i, j]``). Row ``r`` of A enters PE ``(r, 0)``
``r`` cycles late and moves east one PE per cycle; column ``j`` of B enters PE ``(0, j)`` ``j`` cycles late and
moves south one PE per cycle, so PE ``(r, j)`` sees the pair ``(A[r, i], B[i, j])`` exactly ``r + j`` cycles
after it was presented and accumulates ``C[r, j]`` in place (output stationary). ``in_valid``/``in_clear``
travel with A (skewed by ``r``, then east), so every PE clears at its own first product of a run.

Why output stationary: each output word is produced once, in place, and crosses the host link exactly once
(after the final run of its tile), while each A operand is reused by ``cols`` PEs and each B operand by
``rows`` PEs on chip; the wide accumulators never move until the drain, so no partial sum is ever rounded or
sent anywhere. A weight- or input-stationary array would have to move ``acc_width``-bit partial sums between
PEs or off chip.

Drain: ``shift_en`` acts ``shift_latency = 2`` cycles late: it goes through one register per row and then
one register per PE (submodule ``fanout_shift_<r>`` of row ``r``), so no net drives the shift multiplexers of
more than one PE (``acc_width`` bits) and ``shift_en`` itself drives only ``rows`` registers. In a
cycle in which the PE's copy is high (``shift_en`` was high ``shift_latency`` cycles earlier), every accumulator
takes the value of the PE below it (``(r+1, j)``; the bottom row takes 0, or ``shift_in[j]`` when built with
``load_port=True``: the engine's partial-sum LOAD shifts a saved tile in so, row 0 first), so ``acc_out[j]`` (the accumulator of
PE ``(0, j)``) shows rows ``0, 1, ..., rows-1`` of column ``j`` in consecutive cycles. After ``rows`` shifts
every accumulator is 0. The copies are identical registers that synthesis would merge back into one: the board
flow marks every register of a ``fanout_*`` submodule ``keep`` (``boards/build.py``, ``KEEP_FANOUT_SCRIPT``).

Latency: a pair presented in cycle ``T`` has been added into PE ``(r, j)``'s accumulator at the end of cycle
``T + r + j + 1`` (``MACProcessingElement.latency = 2``). After the last pair of a run is presented in cycle
``T``, every accumulator is final from cycle ``T + rows + cols`` on (:attr:`SystolicArray.settle`); pairs may
be presented in every cycle with no bubble, also across runs. A shift must not act before the accumulators
are final (a shift has priority over an accumulation in the same PE): after a last pair presented in cycle
``T``, ``shift_en`` may be high from cycle ``T + settle - shift_latency`` on, and the shift it asks for in cycle
``t`` moves ``acc_out`` at the end of cycle ``t + shift_latency``.

Exact arithmetic: each PE computes ``acc <= (clear ? 0 : acc) + a*b`` in ``acc_width`` bits (two's complement,
no rounding, ``docs/numerics.md`` §5).

Members
-------
SystolicArray
    The array component.
PE_PREFIX, FANOUT_PREFIX, pe_name, fanout_name
    The names of the array's submodules (``pe_<r>_<c>``, ``fanout_shift_<r>``); ``boards/build.py`` builds its
    Yosys selections from them, so a rename here cannot silently break the board flow.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .pe import MACProcessingElement

__all__ = ["SystolicArray", "PE_PREFIX", "FANOUT_PREFIX", "pe_name", "fanout_name"]

#: Prefix of the PE submodules' names (:func:`pe_name`).
PE_PREFIX = "pe_"
#: Prefix of the shift fan-out submodules' names (:func:`fanout_name`).
FANOUT_PREFIX = "fanout_shift_"


def pe_name(row, col):
    """Submodule name of PE ``(row, col)``."""
    return f"{PE_PREFIX}{row}_{col}"


def fanout_name(row):
    """Submodule name of row ``row``'s shift fan-out registers."""
    return f"{FANOUT_PREFIX}{row}"


class _Fanout(wiring.Component):
    """``o[j]`` is ``i`` delayed by 2 registers: one shared stem register, then one register per output bit.

    Latency 2 (``o`` in cycle ``t + 2`` equals ``i`` in cycle ``t``); all registers reset to 0. The per-output
    registers are copies with the same input; they exist so that each drives a small local load.
    """

    def __init__(self, width):
        self.width = width
        super().__init__({"i": In(1), "o": Out(width)})

    def elaborate(self, platform):
        m = Module()
        stem = Signal()
        m.d.sync += stem.eq(self.i)
        for j in range(self.width):
            copy = Signal(name=f"copy{j}")
            m.d.sync += copy.eq(stem)
            m.d.comb += self.o[j].eq(copy)
        return m


class SystolicArray(wiring.Component):
    """``rows x cols`` output-stationary MAC array (module docstring).

    Parameters
    ----------
    rows, cols : int
        Array geometry, 1 to 32.
    wl : int
        Operand word length, 2 to 16.
    acc_width : int
        Accumulator bits, at least ``2 * wl``.
    multiplier : str
        Every PE's multiplier kind (:class:`~fxtrain.rtl.multiplier.RegisteredMultiplier`; ``"auto"``: the
        ECP5 MULT18X18D with its output register on an ECP5 platform, generic otherwise).

    Members
    -------
    a_in : In(ArrayLayout(signed(wl), rows))
        A column presented this cycle.
    b_in : In(ArrayLayout(signed(wl), cols))
        B row presented this cycle.
    in_valid : In(1)
        The pair is a product to accumulate.
    in_clear : In(1)
        Zero each accumulator before adding this pair (first pair of a clearing run).
    shift_en : In(1)
        Drain shift, acting ``shift_latency`` cycles later: every accumulator takes the one below it.
    acc_out : Out(ArrayLayout(signed(acc_width), cols))
        Accumulators of the top row (the head of each column's drain chain).
    settle : int
        Cycles from the last pair presented to all accumulators final (``rows + cols``).
    shift_latency : int
        Cycles from ``shift_en`` to the shift it asks for (2: the per-row and per-PE copy registers).
    shift_in : In(ArrayLayout(signed(acc_width), cols))
        Only with ``load_port=True``: what the bottom row's accumulators take in a shift (0 without the port).
        The engine's partial-sum LOAD drives it; it must hold the value in the cycle the shift acts.
    """

    shift_latency = 2

    def __init__(self, rows, cols, wl, acc_width, multiplier="auto", load_port=False):
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or not 1 <= value <= 32:
                raise ValueError(f"Array {name} must be an integer from 1 to 32, not {value!r}")
        if not isinstance(wl, int) or not 2 <= wl <= 16:
            raise ValueError(f"Word length must be an integer from 2 to 16, not {wl!r}")
        if not isinstance(acc_width, int) or acc_width < 2 * wl:
            raise ValueError(f"Accumulator width must be an integer of at least 2*wl = {2 * wl}, not {acc_width!r}")
        self.rows, self.cols, self.wl, self.acc_width = rows, cols, wl, acc_width
        self.multiplier = multiplier
        self.load_port = bool(load_port)
        self.settle = rows + cols
        super().__init__({
            "a_in": In(data.ArrayLayout(signed(wl), rows)),
            "b_in": In(data.ArrayLayout(signed(wl), cols)),
            "in_valid": In(1),
            "in_clear": In(1),
            "shift_en": In(1),
            "acc_out": Out(data.ArrayLayout(signed(acc_width), cols)),
            **({"shift_in": In(data.ArrayLayout(signed(acc_width), cols))} if self.load_port else {}),
        })

    @staticmethod
    def _delayed(m, value, cycles, name):
        """``value`` delayed by ``cycles`` registers."""
        for i in range(cycles):
            reg = Signal.like(value, name=f"{name}_d{i + 1}")
            m.d.sync += reg.eq(value)
            value = reg
        return value

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        pes = [[MACProcessingElement(self.wl, self.acc_width, self.multiplier) for _ in range(cols)]
               for _ in range(rows)]
        for r in range(rows):
            for j in range(cols):
                m.submodules[pe_name(r, j)] = pes[r][j]
        for r in range(rows):
            a = self._delayed(m, self.a_in[r], r, f"a_skew{r}")
            valid = self._delayed(m, self.in_valid, r, f"valid_skew{r}")
            clear = self._delayed(m, self.in_clear, r, f"clear_skew{r}")
            m.d.comb += [pes[r][0].a_in.eq(a), pes[r][0].in_valid.eq(valid), pes[r][0].in_clear.eq(clear)]
            for j in range(1, cols):
                west = pes[r][j - 1]
                m.d.comb += [pes[r][j].a_in.eq(west.a_out), pes[r][j].in_valid.eq(west.out_valid),
                             pes[r][j].in_clear.eq(west.out_clear)]
        # shift_en fan-out tree: shift_en -> one register per row -> one register per PE (shift_latency = 2)
        shift_pe = []
        for r in range(rows):
            m.submodules[fanout_name(r)] = fanout = _Fanout(cols)
            m.d.comb += fanout.i.eq(self.shift_en)
            shift_pe.append(fanout.o)
        for j in range(cols):
            m.d.comb += pes[0][j].b_in.eq(self._delayed(m, self.b_in[j], j, f"b_skew{j}"))
            for r in range(1, rows):
                m.d.comb += pes[r][j].b_in.eq(pes[r - 1][j].b_out)
            for r in range(rows):
                below = pes[r + 1][j].acc if r + 1 < rows else (self.shift_in[j] if self.load_port else 0)
                m.d.comb += [pes[r][j].shift_in.eq(below), pes[r][j].shift_en.eq(shift_pe[r][j])]
            m.d.comb += self.acc_out[j].eq(pes[0][j].acc)
        return m
