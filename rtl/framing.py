"""Frame decoder and encoder of the host link (``docs/protocol.md``; golden model ``sim.protocol``).

Request frames ``0xA5 CMD SEQ LEN16 PAYLOAD CRC16`` are cut into events for the command executor; response
frames ``0x5A CMD SEQ STATUS LEN16 PAYLOAD CRC16`` are built from a header and a payload byte stream. Both
compute CRC-16/CCITT-FALSE (:mod:`.crc`) over every byte after the start byte up to the end of the payload.

Members
-------
EventKind
    ``HEADER`` (CMD, SEQ and LEN received), ``DATA`` (one payload byte), ``END`` (frame over: CRC checked, or
    abandoned after the idle timeout).
event_layout
    Payload layout of the decoder's event stream.
FrameDecoder
    Byte stream in, events out; hunts for the start byte, so it resynchronises on the next frame by itself.
FrameEncoder
    Header and payload bytes in, byte stream out.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.wire import CRC_INIT, REQUEST_SOF, RESPONSE_SOF
from .crc import crc16_next

__all__ = ["EventKind", "event_layout", "FrameDecoder", "FrameEncoder"]


class _RxState(enum.Enum):
    HUNT = 0
    CMD = 1
    SEQ = 2
    LEN0 = 3
    LEN1 = 4
    PAYLOAD = 5
    CRC0 = 6
    CRC1 = 7


class EventKind(enum.IntEnum):
    HEADER = 0
    DATA = 1
    END = 2


event_layout = data.StructLayout({"kind": 2, "data": 8, "crc_ok": 1, "timeout": 1})


class FrameDecoder(wiring.Component):
    """Request frame decoder with start-byte hunting and an idle timeout.

    Outside a frame every byte other than 0xA5 is discarded. After a start byte it reads CMD, SEQ, LEN (into
    ``cmd``, ``seq``, ``length``, zeroed at the start byte) and emits a ``HEADER`` event, then one ``DATA``
    event per payload byte, then reads the two CRC bytes and emits ``END`` with ``crc_ok``. ``abort`` (asserted
    together with ``o.ready`` by the executor when it rejects a header) drops the rest of the frame: the decoder
    hunts for the next start byte. If no byte arrives for ``timeout_cycles`` consecutive cycles while the
    decoder waits for input inside a frame, it emits ``END`` with ``timeout=1`` and hunts again, so a truncated
    frame can never hang the device.

    Latency: one byte per cycle; an event is registered (it appears the cycle after the byte that causes it).
    The decoder takes a byte only when its event register is free (``~o.valid | o.ready``).

    Parameters
    ----------
    timeout_cycles : int
        Idle cycles (at least 2) after which a started frame is abandoned.

    Members
    -------
    i : In(stream.Signature(8))
    o : Out(stream.Signature(event_layout))
    abort : In(1)
    cmd, seq : Out(8)
    length : Out(16)
    """

    def __init__(self, timeout_cycles):
        if not isinstance(timeout_cycles, int) or timeout_cycles < 2:
            raise ValueError(f"Frame timeout must be an integer of at least 2 cycles, not {timeout_cycles!r}")
        self.timeout_cycles = timeout_cycles
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(event_layout)),
                          "abort": In(1), "cmd": Out(8), "seq": Out(8), "length": Out(16)})

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16, init=CRC_INIT)
        crc_lo = Signal(8)
        remaining = Signal(16)
        idle = Signal(range(self.timeout_cycles))
        byte = self.i.payload
        take = self.i.valid & self.i.ready
        free = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(free & ~self.abort)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def emit(kind, **fields):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.kind.eq(kind)]
            m.d.sync += [getattr(self.o.payload, name).eq(value) for name, value in fields.items()]

        state = Signal(_RxState)
        in_frame = state != _RxState.HUNT
        with m.If(take):
            m.d.sync += idle.eq(0)
        with m.If(take & in_frame & (state != _RxState.CRC0) & (state != _RxState.CRC1)):
            m.d.sync += crc.eq(crc16_next(crc, byte))
        with m.Switch(state):
            with m.Case(_RxState.HUNT):
                with m.If(take & (byte == REQUEST_SOF)):
                    m.d.sync += [crc.eq(CRC_INIT), self.cmd.eq(0), self.seq.eq(0), self.length.eq(0),
                                 state.eq(_RxState.CMD)]
            with m.Case(_RxState.CMD):
                with m.If(take):
                    m.d.sync += [self.cmd.eq(byte), state.eq(_RxState.SEQ)]
            with m.Case(_RxState.SEQ):
                with m.If(take):
                    m.d.sync += [self.seq.eq(byte), state.eq(_RxState.LEN0)]
            with m.Case(_RxState.LEN0):
                with m.If(take):
                    m.d.sync += [self.length[:8].eq(byte), state.eq(_RxState.LEN1)]
            with m.Case(_RxState.LEN1):
                with m.If(take):
                    m.d.sync += [self.length[8:].eq(byte), remaining.eq(Cat(self.length[:8], byte))]
                    emit(EventKind.HEADER, crc_ok=0, timeout=0)
                    with m.If(Cat(self.length[:8], byte) == 0):
                        m.d.sync += state.eq(_RxState.CRC0)
                    with m.Else():
                        m.d.sync += state.eq(_RxState.PAYLOAD)
            with m.Case(_RxState.PAYLOAD):
                with m.If(take):
                    m.d.sync += remaining.eq(remaining - 1)
                    emit(EventKind.DATA, data=byte, crc_ok=0, timeout=0)
                    with m.If(remaining == 1):
                        m.d.sync += state.eq(_RxState.CRC0)
            with m.Case(_RxState.CRC0):
                with m.If(take):
                    m.d.sync += [crc_lo.eq(byte), state.eq(_RxState.CRC1)]
            with m.Case(_RxState.CRC1):
                with m.If(take):
                    emit(EventKind.END, crc_ok=Cat(crc_lo, byte) == crc, timeout=0)
                    m.d.sync += state.eq(_RxState.HUNT)
        with m.If(in_frame & free & ~self.i.valid & ~self.abort):
            m.d.sync += idle.eq(idle + 1)
            with m.If(idle == self.timeout_cycles - 1):
                m.d.sync += [idle.eq(0), state.eq(_RxState.HUNT)]
                emit(EventKind.END, crc_ok=0, timeout=1)
        with m.If(self.abort):
            m.d.sync += [idle.eq(0), state.eq(_RxState.HUNT)]
        return m


class FrameEncoder(wiring.Component):
    """Response frame encoder.

    ``start`` (while ``busy`` is low) latches ``cmd``, ``seq``, ``status`` and ``length``; the encoder then sends
    ``0x5A CMD SEQ STATUS LEN_LO LEN_HI``, forwards exactly ``length`` bytes from ``payload`` (``payload.ready``
    is high while the output register can take a byte during that phase) and appends ``CRC_LO CRC_HI``. ``o`` is
    registered (a byte appears on ``o`` the cycle after it is produced). ``busy`` is high from the cycle after
    ``start`` until the last CRC byte has left ``o``. One byte per cycle when ``o`` is ready.

    A byte produced while ``o`` holds one that is not taken waits in a one-byte skid register, and no byte is
    produced while that register is full, so ``payload.ready`` and the encoder's progress depend on flip-flops,
    not on ``o.ready``; with ``o`` always ready the skid register stays empty (same timing as without it).
    The CRC absorbs each byte one cycle after it was produced, from a copy of it in a register (so a payload
    byte's source logic ends at flip-flops, not in the CRC network); the CRC bytes are taken from the CRC
    including any byte still pending, so no cycle is added.

    Members
    -------
    start : In(1)
    cmd, seq, status : In(8)
    length : In(16)
    payload : In(stream.Signature(8))
    o : Out(stream.Signature(8))
    busy : Out(1)
    """

    def __init__(self):
        super().__init__({"start": In(1), "cmd": In(8), "seq": In(8), "status": In(8), "length": In(16),
                          "payload": In(stream.Signature(8)), "o": Out(stream.Signature(8)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16, init=CRC_INIT)           # CRC of the bytes before crc_byte (all of them if not pend)
        crc_byte = Signal(8)                      # the byte produced last cycle, when pend
        pend = Signal()
        crc_now = Signal(16)                      # CRC of every CRC-covered byte produced so far
        m.d.comb += crc_now.eq(Mux(pend, crc16_next(crc, crc_byte), crc))
        m.d.sync += [crc.eq(crc_now), pend.eq(0)]
        header = Signal(40)
        remaining = Signal(16)
        more = Signal()                           # remaining != 0, as a register
        index = Signal(range(6))
        # the next byte is computed combinationally (valid, byte) while the skid register is empty; it goes
        # into the output register when that is free or being emptied, else into the skid register
        valid = Signal()
        byte = Signal(8)
        skid_valid = Signal()
        skid_byte = Signal(8)
        load = ~skid_valid
        sent = valid & load
        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(skid_byte), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(valid), self.o.payload.eq(byte)]
        with m.Elif(sent):
            m.d.sync += [skid_valid.eq(1), skid_byte.eq(byte)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [header.eq(Cat(self.cmd, self.seq, self.status, self.length)),
                                 remaining.eq(self.length), more.eq(self.length != 0), index.eq(0),
                                 crc.eq(CRC_INIT)]
                    m.next = "SOF"
            with m.State("SOF"):
                m.d.comb += [valid.eq(1), byte.eq(RESPONSE_SOF)]
                with m.If(sent):
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [valid.eq(1), byte.eq(header.word_select(index, 8))]
                with m.If(sent):
                    m.d.sync += [crc_byte.eq(byte), pend.eq(1), index.eq(index + 1)]
                    with m.If(index == 4):
                        m.next = "PAYLOAD_OR_CRC"
            with m.State("PAYLOAD_OR_CRC"):
                with m.If(~more):
                    m.d.comb += [valid.eq(1), byte.eq(crc_now[:8])]
                    with m.If(sent):
                        m.next = "CRC1"
                with m.Else():
                    m.d.comb += [valid.eq(self.payload.valid), byte.eq(self.payload.payload),
                                 self.payload.ready.eq(load)]
                    with m.If(sent):
                        m.d.sync += [crc_byte.eq(byte), pend.eq(1), remaining.eq(remaining - 1),
                                     more.eq(remaining != 1)]
            with m.State("CRC1"):
                m.d.comb += [valid.eq(1), byte.eq(crc_now[8:])]
                with m.If(sent):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | self.o.valid | skid_valid)
        return m
