"""UART (8 data bits, no parity, 1 stop bit) with the bit period derived from the clock and the baud rate.

Members
-------
BAUD_TOLERANCE : float
    Largest accepted relative difference between the requested and the generated baud rate (2 %). Why 2 %: the
    receiver samples each bit at its middle with a one-cycle uncertainty (start-bit detection through the
    synchroniser), so it accepts a sender off by up to ``(0.5 - 1/divisor) / 9.5`` over the 9.5 bits to the
    middle of the stop bit: 2.6 % at the minimum divisor 4, 3.2 % at 5. The boards' FTDI bridges make 12 and
    3 Mbaud exactly, so the device clock's error is the whole mismatch; 2 % stays inside the divisor-4 window
    with margin for the far end's sampling (``tests/test_uart.py`` decodes ±2 % at divisors 4, 5 and 16).
MIN_DIVISOR : int
    Fewest clock cycles per bit the receiver supports (4: it needs ``divisor // 2 >= 2`` cycles to reach the
    middle of the start bit after the synchroniser and a sampling point at least one cycle from each bit edge;
    at 3 the window of the formula above would be 1.8 %, below the tolerance). 12 Mbaud therefore needs a UART
    clock of at least 47.04 MHz (48 MHz: divisor 4 exactly).
uart_divisor
    Clock cycles per bit for a clock and a baud rate; ``ValueError`` when the error exceeds the tolerance.
UARTTransmitter
    Byte stream in, serial line out.
UARTReceiver
    Serial line in, byte stream out.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["BAUD_TOLERANCE", "MIN_DIVISOR", "uart_divisor", "UARTTransmitter", "UARTReceiver"]

BAUD_TOLERANCE = 0.02
MIN_DIVISOR = 4


def uart_divisor(clk_freq, baud, tolerance=BAUD_TOLERANCE):
    """``round(clk_freq / baud)``, checked: at least :data:`MIN_DIVISOR` and within ``tolerance`` of ``baud``.

    Raises
    ------
    ValueError
        Naming the clock, the requested baud rate, the baud rate the divisor gives and its error.
    """
    for name, value in (("Clock frequency", clk_freq), ("Baud rate", baud)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer in Hz, not {value!r}")
    if not isinstance(tolerance, float) or not 0 < tolerance < 0.05:
        raise ValueError(f"Baud tolerance must be a float in (0, 0.05), not {tolerance!r}")
    divisor = max(1, round(clk_freq / baud))
    if divisor < MIN_DIVISOR:
        raise ValueError(f"Baud rate {baud} is too fast for a {clk_freq} Hz clock: {clk_freq / baud:.2f} cycles "
                         f"per bit, the receiver needs at least {MIN_DIVISOR}")
    actual = clk_freq / divisor
    error = abs(actual - baud) / baud
    if error > tolerance:
        raise ValueError(f"Baud rate {baud} cannot be made from a {clk_freq} Hz clock: the nearest divisor "
                         f"{divisor} gives {actual:.0f} baud, {100 * error:.2f} % off (tolerance "
                         f"{100 * tolerance:.1f} %)")
    return divisor


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be an integer of at least {MIN_DIVISOR}, not {divisor!r}")


class UARTTransmitter(wiring.Component):
    """8N1 transmitter.

    A byte accepted from ``i`` (``ready`` is high only while idle) is sent as a start bit (0), bits 0..7, a
    stop bit (1), each ``divisor`` cycles long; the start bit begins the cycle after the transfer. ``tx`` idles
    high. One byte takes ``10 * divisor`` cycles; the next byte is accepted in the last cycle of the stop bit,
    so back-to-back bytes leave no gap.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (:func:`uart_divisor`).
    registered_ready : bool
        Drive ``i.ready`` from a register computed a cycle ahead (same timing on the wire, no comparator in
        front of the producer; the SoC's two-clock variant uses it for its crossing FIFO), else from the bit
        counter and timer directly (fewer cells).

    Members
    -------
    i : In(stream.Signature(8))
    tx : Out(1)
    """

    def __init__(self, divisor, *, registered_ready=False):
        _check_divisor(divisor)
        self.divisor = divisor
        self.registered_ready = bool(registered_ready)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        if not self.registered_ready:
            return self._elaborate_comb_ready()
        m = Module()
        shreg = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(self.divisor))
        # ``ready`` is a register: high while idle and in the final cycle of the stop bit (bits == 1 and
        # timer == 0), computed one cycle ahead so that no comparator sits in front of the FIFO read it drives.
        ready = Signal(init=1)
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq(ready)]
        with m.If(self.i.valid & ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))), bits.eq(10),
                         timer.eq(self.divisor - 1), ready.eq(0)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(self.divisor - 1), ready.eq(bits == 1)]
            with m.Else():
                m.d.sync += [timer.eq(timer - 1), ready.eq((bits == 1) & (timer == 1))]
        return m

    def _elaborate_comb_ready(self):
        m = Module()
        shreg = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(self.divisor))
        last = (bits == 1) & (timer == 0)          # final cycle of the stop bit
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq((bits == 0) | last)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))), bits.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UARTReceiver(wiring.Component):
    """8N1 receiver with a two-flip-flop synchroniser on ``rx``.

    After a falling edge of the synchronised line it waits ``divisor // 2`` cycles to the middle of the start
    bit (a high level there is a glitch: ignored), then samples 8 data bits and the stop bit every ``divisor``
    cycles. A byte whose stop bit is high is offered on ``o`` from the middle of its stop bit; a byte whose stop
    bit is low counts in ``framing_errors``; a byte arriving while the previous one still waits on ``o`` is
    dropped and counts in ``overruns``. Latency from the middle of the stop bit on the wire to ``o.valid``:
    2 (synchroniser) + 1 cycles. Tolerates a baud rate error up to about ``±(0.5 - 1/divisor) / 9.5``.

    Members
    -------
    rx : In(1)
    o : Out(stream.Signature(8))
    framing_errors, overruns : Out(16)
        Wrapping counters.
    """

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "framing_errors": Out(16), "overruns": Out(16)})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self.divisor))
        shreg = Signal(8)
        bits = Signal(range(9))
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bits.eq(8)]
                    m.next = "DATA"
                    with m.If(rx):
                        m.next = "IDLE"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), shreg.eq(Cat(shreg[1:], rx)), bits.eq(bits - 1)]
                    with m.If(bits == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overruns.eq(self.overruns + 1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    m.next = "IDLE"
        return m
