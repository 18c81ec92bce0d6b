"""Reusable cocotb drivers: clock and reset, ``lib.stream`` sources and sinks with seeded random stalls.

Amaranth flattens a stream member ``name`` of a component into the Verilog ports ``name__payload``,
``name__valid`` and ``name__ready``; a payload with an ``amaranth.lib.data`` layout is one packed vector (first
field in the least significant bits). :func:`pack`/:func:`unpack` convert between nested Python values
(``dict`` for a ``StructLayout``, ``list`` for an ``ArrayLayout``, ``int`` for a plain shape, signed shapes
as signed ints) and that vector, so benches speak in field values, never in bit offsets.

Handshake timing used by every driver: right after a rising edge the driver sets its outputs for the coming
cycle, then waits for ``ReadOnly`` and samples the other side; a transfer happens at the next rising edge when
``valid`` and ``ready`` were both high in that sampled state. Drivers therefore work with combinational or
registered partners and never race the design.

Members
-------
pack, unpack
    Layout-driven packing of payload values.
settle_combinational
    Make Icarus run every combinational process of yosys-written Verilog once at time 0.
start_clock_and_reset
    Settle, start the clock on ``dut.clk`` and pulse ``dut.rst`` (Amaranth's default ``sync`` domain ports).
StreamSource
    Sends payloads on a stream, optionally dropping ``valid`` at random (seeded) between transfers.
StreamSink
    Receives payloads from a stream, optionally dropping ``ready`` at random (seeded).
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["pack", "unpack", "settle_combinational", "start_clock_and_reset", "StreamSource", "StreamSink"]


def _shape_info(shape):
    """``(width, signed, layout_or_None)`` of an Amaranth shape-castable."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if isinstance(shape, data.Layout):
        return shape.size, False, shape
    shape = Shape.cast(shape)
    return shape.width, shape.signed, None


def pack(shape, value):
    """The unsigned integer holding ``value`` laid out by ``shape`` (a layout or a plain shape)."""
    width, signed, layout = _shape_info(shape)
    if layout is None:
        value = int(value)
        low, high = (-(1 << (width - 1)), 1 << (width - 1)) if signed else (0, 1 << width)
        if not low <= value < high:
            raise ValueError(f"Value {value} does not fit in {'signed' if signed else 'unsigned'}({width})")
        return value & ((1 << width) - 1)
    from amaranth.lib import data

    if isinstance(layout, data.ArrayLayout):
        if len(value) != layout.length:
            raise ValueError(f"Array layout of {layout.length} elements got {len(value)} values")
        items = enumerate(value)
    else:
        unknown = set(value) - {name for name, _ in layout}
        if unknown:
            raise ValueError(f"Unknown fields {sorted(unknown)} for layout {layout!r}")
        items = value.items()
    bits = 0
    for key, item in items:
        field = layout[key]
        bits |= pack(field.shape, item) << field.offset
    return bits


def unpack(shape, bits):
    """Inverse of :func:`pack`: nested ``dict``/``list``/``int`` from an unsigned integer."""
    width, signed, layout = _shape_info(shape)
    bits = int(bits) & ((1 << width) - 1)
    if layout is None:
        return bits - (1 << width) if signed and bits >> (width - 1) else bits
    from amaranth.lib import data

    values = [(key, unpack(field.shape, bits >> field.offset)) for key, field in layout]
    if isinstance(layout, data.ArrayLayout):
        return [value for _, value in values]
    return dict(values)


def settle_combinational(handle):
    """Make Icarus evaluate every combinational process of a yosys-written design once, at time 0.

    yosys's Verilog puts a never-changing ``$auto$verilog_backend...`` register in the sensitivity list of each
    ``always @*`` process so that it runs at time 0; Icarus 11 does not treat the register's declaration
    initialiser as an event, so comb outputs of FSMs stay X until one of their inputs changes. Depositing a
    value into those registers is that event. Harmless on Verilator. Returns how many registers were poked.
    """
    count = 0
    for child in handle:
        name = child._name.lstrip("\\")
        if name.startswith("$auto$verilog_backend"):
            child.value = 1
            count += 1
        elif type(child).__name__ == "HierarchyObject":
            count += settle_combinational(child)
    return count


async def start_clock_and_reset(dut, period_ns=10, reset_cycles=2, clk="clk", rst="rst"):
    """:func:`settle_combinational`, start a clock on ``dut.<clk>`` and hold ``dut.<rst>`` high for
    ``reset_cycles`` rising edges."""
    settle_combinational(dut)
    cocotb.start_soon(Clock(getattr(dut, clk), period_ns, unit="ns").start())
    reset = getattr(dut, rst)
    reset.value = 1
    await ClockCycles(getattr(dut, clk), reset_cycles)
    reset.value = 0


class _StreamPort:
    def __init__(self, dut, name, layout, clock, rng, probability, what):
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"{what} probability must be in (0, 1], not {probability!r}")
        self.name = name
        self.layout = layout
        self.clock = clock if clock is not None else dut.clk
        self.rng = rng if rng is not None else random.Random(0)
        self.probability = probability
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.transfer_times = []

    def _chance(self):
        return self.probability >= 1.0 or self.rng.random() < self.probability


class StreamSource(_StreamPort):
    """Drives stream ``name`` of ``dut``: ``send()`` queues payload values, a background coroutine offers them.

    Parameters
    ----------
    dut : cocotb handle
    name : str
        Stream member name (ports ``name__payload``/``__valid``/``__ready``).
    layout : Amaranth layout or shape
        Payload layout for :func:`pack`.
    clock : cocotb handle, optional
        Defaults to ``dut.clk``.
    rng : random.Random, optional
        Source of the stalls (seed it and print the seed in the test).
    valid_probability : float
        Chance that a queued payload is offered in a cycle (1.0: never stall); once offered it stays offered
        (``valid`` high, payload stable) until it is transferred, as ``lib.stream`` requires.

    Members
    -------
    send(value)
        Queue one payload value (nested ``dict``/``list``/``int``).
    wait_idle()
        Wait until every queued payload has been transferred.
    transfer_times : list of float
        Simulation time in ns of the rising edge at which each transfer happened, in order (divide
        differences by the clock period to get cycles).
    """

    def __init__(self, dut, name, layout, *, clock=None, rng=None, valid_probability=1.0):
        super().__init__(dut, name, layout, clock, rng, valid_probability, "valid")
        self._queue = deque()
        self._idle = Event()
        self._idle.set()
        self._transfer = False
        self.valid.value = 0
        cocotb.start_soon(self._drive())

    def send(self, value):
        self._queue.append(pack(self.layout, value))
        self._idle.clear()

    async def wait_idle(self):
        while self._queue:
            await self._idle.wait()

    async def _drive(self):
        offered = False
        while True:
            await RisingEdge(self.clock)
            if offered and self._transfer:
                offered = False
                self._queue.popleft()
                self.transfer_times.append(get_sim_time("ns"))
                if not self._queue:
                    self._idle.set()
            # once offered, a payload stays offered until it is taken (lib.stream rule)
            offered = bool(self._queue) and ((offered and not self._transfer) or self._chance())
            if offered:
                self.payload.value = self._queue[0]
            self.valid.value = int(offered)
            await ReadOnly()
            self._transfer = offered and bool(int(self.ready.value))


class StreamSink(_StreamPort):
    """Receives stream ``name`` of ``dut`` into ``received`` (unpacked values), with random ``ready`` stalls.

    Parameters are those of :class:`StreamSource` with ``ready_probability`` instead of ``valid_probability``.

    Members
    -------
    received : list
        Unpacked payloads in arrival order.
    transfer_times : list of float
        Simulation time in ns of the rising edge of every transfer.
    wait_for(count)
        Wait until ``count`` payloads in all have been received.
    """

    def __init__(self, dut, name, layout, *, clock=None, rng=None, ready_probability=1.0):
        super().__init__(dut, name, layout, clock, rng, ready_probability, "ready")
        self.received = []
        self._arrived = Event()
        self.ready.value = 0
        cocotb.start_soon(self._drive())

    async def wait_for(self, count):
        while len(self.received) < count:
            self._arrived.clear()
            await self._arrived.wait()

    async def _drive(self):
        taken = None
        while True:
            await RisingEdge(self.clock)
            if taken is not None:
                self.received.append(unpack(self.layout, taken))
                self.transfer_times.append(get_sim_time("ns"))
                self._arrived.set()
            ready = self._chance()
            self.ready.value = int(ready)
            await ReadOnly()
            taken = int(self.payload.value) if ready and int(self.valid.value) else None
