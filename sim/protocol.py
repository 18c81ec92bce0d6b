"""Golden model of the host link protocol: frames, CRC-16, commands, statuses, and a device-side emulator.

This module is the normative reference of ``docs/protocol.md``; the RTL (:mod:`fxtrain.rtl.framing`,
:mod:`fxtrain.rtl.command`) answers every byte sequence exactly like :class:`ProtocolEmulator`.

Frames (all multi-byte fields little-endian)::

    request  : 0xA5 | CMD | SEQ | LEN_LO LEN_HI | PAYLOAD[LEN] | CRC_LO CRC_HI
    response : 0x5A | CMD | SEQ | STATUS | LEN_LO LEN_HI | PAYLOAD[LEN] | CRC_LO CRC_HI

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; check value
0x29B1 for ``b"123456789"``) over every byte after the start byte up to the end of the payload.

Members
-------
REQUEST_SOF, RESPONSE_SOF : int
    Start bytes.
PROTOCOL_VERSION : int
    Reported by IDENTIFY; a host refuses a device with another version.
Command, Status : IntEnum
    Command and status codes.
LINK_COUNTERS : tuple of str
    Names of the link counters, in READ_COUNTERS order (engine counters follow).
crc16, crc16_update
    CRC-16/CCITT-FALSE of a byte string; the byte-wise table step that defines it.
encode_request, encode_response
    Whole frames as bytes.
ResponseParser
    Incremental parser of response frames (host side).
Identity
    The IDENTIFY payload as a dataclass; ``Identity.from_parameters`` is what the RTL builds its ROM from.
value_bytes, entry_bytes, result_row_bytes, request_length_range
    Payload sizes derived from an ``EngineConfig``; the legal LEN range of each command.
default_frame_timeout
    Idle cycles after which a device abandons a started frame (10 ms of its clock).
counter_names
    Field names of the READ_COUNTERS payload.
encode_result, decode_result
    The READ_RESULT payload.
pack_values, unpack_values
    Raw integers to and from little-endian two's complement fields.
ProtocolEmulator
    Byte-level device emulator over :class:`fxtrain.sim.engine.EngineModel`.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass

import numpy as np

from .gemm import EngineConfig

__all__ = ["REQUEST_SOF", "RESPONSE_SOF", "PROTOCOL_VERSION", "MAGIC", "Command", "Status", "LINK_COUNTERS",
           "crc16", "encode_request", "encode_response", "ResponseParser", "Response", "Identity",
           "value_bytes", "entry_bytes", "result_row_bytes", "request_length_range", "pack_values",
           "unpack_values", "default_frame_timeout", "ProtocolEmulator", "RESPONSE_HEADER_BYTES",
           "REQUEST_HEADER_BYTES", "MAX_LENGTH", "encode_result", "decode_result", "crc16_update",
           "RUN_CLEAR", "RUN_DRAIN", "counter_names"]

REQUEST_SOF = 0xA5
RESPONSE_SOF = 0x5A
PROTOCOL_VERSION = 1
MAGIC = b"FXTR"
REQUEST_HEADER_BYTES = 5     # SOF CMD SEQ LEN LEN
RESPONSE_HEADER_BYTES = 6    # SOF CMD SEQ STATUS LEN LEN
MAX_LENGTH = 0xFFFF


class Command(enum.IntEnum):
    IDENTIFY = 0x01
    WRITE_A = 0x02
    WRITE_B = 0x03
    SET_ROUNDING = 0x04
    SET_SEEDS = 0x05
    RUN = 0x06
    READ_RESULT = 0x07
    READ_COUNTERS = 0x08
    SOFT_RESET = 0x09


class Status(enum.IntEnum):
    OK = 0x00
    CRC_ERROR = 0x01
    UNKNOWN_COMMAND = 0x02
    BAD_LENGTH = 0x03
    BAD_ARGUMENT = 0x04
    TIMEOUT = 0x05


LINK_COUNTERS = ("frames_ok", "crc_errors", "unknown_commands", "bad_lengths", "bad_arguments", "timeouts")

RUN_CLEAR = 1
RUN_DRAIN = 2


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021


def crc16_update(crc, byte):
    """One byte of CRC-16/CCITT-FALSE (MSB first)."""
    return ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of ``data``: poly 0x1021, init 0xFFFF, not reflected, no final XOR.

    Computed by ``binascii.crc_hqx`` (the same polynomial, unreflected, with the initial value passed in);
    :func:`crc16_update` is the byte-wise table definition it is tested against."""
    return binascii.crc_hqx(bytes(data), crc)


def _check_byte(name, value):
    if not isinstance(value, (int, np.integer)) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte 0..255, not {value!r}")
    return int(value)


def encode_request(cmd, seq, payload=b""):
    """A request frame: ``0xA5 CMD SEQ LEN16 PAYLOAD CRC16`` (CRC over CMD..PAYLOAD)."""
    payload = bytes(payload)
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"Payload of {len(payload)} bytes exceeds the frame maximum {MAX_LENGTH}")
    body = bytes([_check_byte("Command", cmd), _check_byte("Sequence number", seq)]) + \
        struct.pack("<H", len(payload)) + payload
    return bytes([REQUEST_SOF]) + body + struct.pack("<H", crc16(body))


def encode_response(cmd, seq, status, payload=b""):
    """A response frame: ``0x5A CMD SEQ STATUS LEN16 PAYLOAD CRC16`` (CRC over CMD..PAYLOAD)."""
    payload = bytes(payload)
    body = bytes([cmd & 0xFF, seq & 0xFF, int(status) & 0xFF]) + struct.pack("<H", len(payload)) + payload
    return bytes([RESPONSE_SOF]) + body + struct.pack("<H", crc16(body))


@dataclass
class Response:
    cmd: int
    seq: int
    status: int
    payload: bytes
    crc_ok: bool


class ResponseParser:
    """Incremental host-side parser: feed bytes, collect complete :class:`Response` objects.

    Bytes before a start byte are skipped (and counted in ``skipped``); a frame whose CRC fails is still returned,
    with ``crc_ok=False``, so the host can retry.
    """

    def __init__(self):
        self._buf = bytearray()
        self.skipped = 0

    def feed(self, data):
        self._buf += data
        out = []
        while True:
            start = self._buf.find(bytes([RESPONSE_SOF]))
            if start < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                return out
            if start:
                self.skipped += start
                del self._buf[:start]
            if len(self._buf) < RESPONSE_HEADER_BYTES:
                return out
            length = self._buf[4] | (self._buf[5] << 8)
            total = RESPONSE_HEADER_BYTES + length + 2
            if len(self._buf) < total:
                return out
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            crc_ok = crc16(frame[1:-2]) == (frame[-2] | (frame[-1] << 8))
            out.append(Response(frame[1], frame[2], frame[3], frame[RESPONSE_HEADER_BYTES:-2], crc_ok))

    @property
    def pending(self):
        return len(self._buf)


def value_bytes(config):
    """Bytes per operand or result value on the wire: ``ceil(wl / 8)``."""
    return (config.wl + 7) // 8


def entry_bytes(config, which):
    """Bytes of one A entry (``rows`` values) or B entry (``cols`` values)."""
    if which not in ("A", "B"):
        raise ValueError(f"Operand must be 'A' or 'B', not {which!r}")
    return (config.rows if which == "A" else config.cols) * value_bytes(config)


def result_row_bytes(config):
    """Bytes of one result row: ``cols`` values, then ``ceil(cols/8)`` saturation-flag bytes."""
    return config.cols * value_bytes(config) + (config.cols + 7) // 8


def default_frame_timeout(clk_freq):
    """Idle cycles after which a started frame is abandoned: 10 ms of clock, at least 256 cycles."""
    return max(256, int(clk_freq) // 100)


def request_length_range(config, cmd):
    """``(min, max)`` legal LEN of a request, or ``None`` for an unknown command."""
    try:
        cmd = Command(cmd)
    except ValueError:
        return None
    if cmd in (Command.WRITE_A, Command.WRITE_B):
        e = entry_bytes(config, "A" if cmd is Command.WRITE_A else "B")
        return 4 + e, min(MAX_LENGTH, 4 + config.depth * e)
    fixed = {Command.SET_ROUNDING: 2, Command.SET_SEEDS: 4 * config.lanes, Command.RUN: 9}
    n = fixed.get(cmd, 0)
    return n, n


def pack_values(values, nbytes):
    """Signed integers as ``nbytes``-byte little-endian two's complement fields, concatenated."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    u = values.astype(np.uint64) & np.uint64((1 << (8 * nbytes)) - 1)
    out = np.zeros((len(values), nbytes), dtype=np.uint8)
    for i in range(nbytes):
        out[:, i] = (u >> np.uint64(8 * i)) & np.uint64(0xFF)
    return out.tobytes()


def unpack_values(data, nbytes, wl):
    """Inverse of :func:`pack_values`, keeping the low ``wl`` bits of each field as a signed integer."""
    raw = np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, nbytes).astype(np.int64)
    u = np.zeros(len(raw), dtype=np.int64)
    for i in range(nbytes):
        u |= raw[:, i] << (8 * i)
    u &= (1 << wl) - 1
    return np.where(u >= 1 << (wl - 1), u - (1 << wl), u)


@dataclass(frozen=True)
class Identity:
    """The IDENTIFY payload (28 bytes; layout in ``docs/protocol.md``).

    Members
    -------
    version, rows, cols, wl, max_k_log2, lane_width, n_counters, depth, clk_freq, baud, frame_timeout
        The fields; ``baud`` is 0 for the byte-stream (simulation) variant of the SoC.
    config : EngineConfig
        The engine configuration these fields describe.
    """

    version: int
    rows: int
    cols: int
    wl: int
    max_k_log2: int
    lane_width: int
    n_counters: int
    depth: int
    clk_freq: int
    baud: int
    frame_timeout: int

    FORMAT = "<4sBBBBBBBBIIII"

    @classmethod
    def from_parameters(cls, config, clk_freq, baud, frame_timeout=None, n_engine_counters=None):
        """The identity a SoC built from these parameters reports."""
        if n_engine_counters is None:
            from .engine import COUNTER_NAMES
            n_engine_counters = len(COUNTER_NAMES)
        return cls(PROTOCOL_VERSION, config.rows, config.cols, config.wl, config.max_k_log2, config.lane_width,
                   len(LINK_COUNTERS) + n_engine_counters, config.depth, int(clk_freq), int(baud),
                   default_frame_timeout(clk_freq) if frame_timeout is None else int(frame_timeout))

    def to_bytes(self):
        return struct.pack(self.FORMAT, MAGIC, self.version, self.rows, self.cols, self.wl, self.max_k_log2,
                           self.lane_width, self.n_counters, 0, self.depth, self.clk_freq, self.baud,
                           self.frame_timeout)

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        if len(data) != struct.calcsize(cls.FORMAT):
            raise ValueError(f"IDENTIFY payload must be {struct.calcsize(cls.FORMAT)} bytes, not {len(data)}")
        (magic, version, rows, cols, wl, max_k_log2, lane_width, n_counters, _reserved, depth, clk_freq, baud,
         frame_timeout) = struct.unpack(cls.FORMAT, data)
        if magic != MAGIC:
            raise ValueError(f"IDENTIFY payload starts with {magic!r}, not {MAGIC!r}: not an fxtrain device")
        return cls(version, rows, cols, wl, max_k_log2, lane_width, n_counters, depth, clk_freq, baud,
                   frame_timeout)

    @property
    def config(self):
        return EngineConfig(rows=self.rows, cols=self.cols, wl=self.wl, depth=self.depth,
                            max_k_log2=self.max_k_log2)


class _RxState(enum.Enum):
    HUNT = 0
    CMD = 1
    SEQ = 2
    LEN0 = 3
    LEN1 = 4
    PAYLOAD = 5
    CRC0 = 6
    CRC1 = 7


class ProtocolEmulator:
    """The device side of the protocol, byte for byte as the RTL answers, over the engine golden model.

    Feed request bytes with :meth:`feed` (returns the response bytes produced); :meth:`idle` lets idle clock
    cycles pass, which abandons a started frame after ``frame_timeout`` cycles (a TIMEOUT response), like the
    RTL's idle counter. Side effects follow the RTL: WRITE_A/WRITE_B entries and SET_SEEDS lanes are written as
    their bytes arrive (so a frame that later fails its CRC may have written some of them; the host re-sends);
    every other command acts only after the CRC has been checked.

    Parameters
    ----------
    config : EngineConfig
    clk_freq, baud : int
        Reported by IDENTIFY.
    frame_timeout : int, optional
        Idle cycles before a started frame is abandoned (default :func:`default_frame_timeout`).

    Members
    -------
    engine : fxtrain.sim.engine.EngineModel
    identity : Identity
    link_counters : dict
    """

    def __init__(self, config=EngineConfig(), clk_freq=12_000_000, baud=3_000_000, frame_timeout=None):
        from .engine import COUNTER_NAMES, EngineModel
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {type(config).__name__}")
        self.config = config
        self._engine_cls = EngineModel
        self._engine_counter_names = tuple(COUNTER_NAMES)
        self.identity = Identity.from_parameters(config, clk_freq, baud, frame_timeout, len(COUNTER_NAMES))
        self.engine = EngineModel(config)
        self._reset_link()
        self._clear_result()
        self._rx = _RxState.HUNT
        self._idle = 0

    def _reset_link(self):
        self.link_counters = {name: 0 for name in LINK_COUNTERS}
        self.shift = 0
        self.mode = 0

    def _clear_result(self):
        self._result = (np.zeros((self.config.rows, self.config.cols), dtype=np.int64),
                        np.zeros((self.config.rows, self.config.cols), dtype=bool))

    # -- byte-level receiver (mirrors rtl/framing.FrameDecoder + rtl/command.CommandExecutor) --

    def feed(self, data):
        data = bytes(data)
        out = bytearray()
        i = 0
        while i < len(data):
            if (self._rx is _RxState.PAYLOAD and self._cmd in (Command.WRITE_A, Command.WRITE_B)
                    and self._count_in >= 4):
                i += self._bulk_entries(data[i:i + self._len - self._count_in])
            else:
                out += self._byte(data[i])
                i += 1
        return bytes(out)

    def _bulk_entries(self, chunk):
        """Operand-entry bytes of a WRITE_A/WRITE_B payload, many at once (same effect as byte by byte)."""
        self._idle = 0
        self._crc = crc16(chunk, self._crc)
        which = "A" if self._cmd == Command.WRITE_A else "B"
        e = entry_bytes(self.config, which)
        done_before = (self._count_in - 4) // e
        buf = bytes(self._word) + chunk
        complete = len(buf) // e
        if complete and self._write_check() is Status.OK:
            addr = struct.unpack("<H", bytes(self._args[:2]))[0] + done_before
            n = self.config.rows if which == "A" else self.config.cols
            values = unpack_values(buf[:complete * e], value_bytes(self.config), self.config.wl)
            getattr(self.engine, "write_a" if which == "A" else "write_b")(addr, values.reshape(complete, n))
        self._word = bytearray(buf[complete * e:])
        self._count_in += len(chunk)
        if self._count_in == self._len:
            self._rx = _RxState.CRC0
        return len(chunk)

    def idle(self, cycles):
        """Let ``cycles`` clock cycles pass with no input; returns a TIMEOUT response if a frame was abandoned."""
        if self._rx is _RxState.HUNT:
            return b""
        self._idle += int(cycles)
        if self._idle >= self.identity.frame_timeout:
            self._rx = _RxState.HUNT
            self.link_counters["timeouts"] += 1
            return self._respond(Status.TIMEOUT)
        return b""

    def _count(self, name):
        self.link_counters[name] = (self.link_counters[name] + 1) & 0xFFFFFFFF

    def _byte(self, byte):
        self._idle = 0
        st = self._rx
        if st is _RxState.HUNT:
            if byte == REQUEST_SOF:
                self._rx = _RxState.CMD
                self._cmd = self._seq = self._len = 0
                self._crc = CRC_INIT
            return b""
        if st in (_RxState.CMD, _RxState.SEQ, _RxState.LEN0, _RxState.LEN1, _RxState.PAYLOAD):
            self._crc = crc16_update(self._crc, byte)
        if st is _RxState.CMD:
            self._cmd, self._rx = byte, _RxState.SEQ
        elif st is _RxState.SEQ:
            self._seq, self._rx = byte, _RxState.LEN0
        elif st is _RxState.LEN0:
            self._len, self._rx = byte, _RxState.LEN1
        elif st is _RxState.LEN1:
            self._len |= byte << 8
            return self._header()
        elif st is _RxState.PAYLOAD:
            self._payload_byte(byte)
            self._count_in += 1
            if self._count_in == self._len:
                self._rx = _RxState.CRC0
        elif st is _RxState.CRC0:
            self._crc_rx, self._rx = byte, _RxState.CRC1
        elif st is _RxState.CRC1:
            self._crc_rx |= byte << 8
            self._rx = _RxState.HUNT
            return self._end()
        return b""

    def _header(self):
        limits = request_length_range(self.config, self._cmd)
        if limits is None:
            self._rx = _RxState.HUNT
            self._count("unknown_commands")
            return self._respond(Status.UNKNOWN_COMMAND)
        if not limits[0] <= self._len <= limits[1]:
            self._rx = _RxState.HUNT
            self._count("bad_lengths")
            return self._respond(Status.BAD_LENGTH)
        self._count_in = 0
        self._args = bytearray()
        self._word = bytearray()
        self._lane = 0
        self._zero_seed = False
        self._rx = _RxState.PAYLOAD if self._len else _RxState.CRC0
        return b""

    def _write_check(self):
        """(status of a WRITE_A/B once its 4 argument bytes are in): length, count and address checks."""
        addr, count = struct.unpack("<HH", bytes(self._args[:4]))
        e = entry_bytes(self.config, "A" if self._cmd == Command.WRITE_A else "B")
        if count == 0 or self._len != 4 + count * e:
            return Status.BAD_LENGTH
        if addr + count > self.config.depth:
            return Status.BAD_ARGUMENT
        return Status.OK

    def _payload_byte(self, byte):
        cmd = self._cmd
        if cmd in (Command.WRITE_A, Command.WRITE_B):
            if self._count_in < 4:
                self._args.append(byte)
                return
            self._word.append(byte)
            which = "A" if cmd == Command.WRITE_A else "B"
            if len(self._word) == entry_bytes(self.config, which):
                if self._write_check() is Status.OK:
                    addr = struct.unpack("<H", bytes(self._args[:2]))[0] + (self._count_in - 4) // len(self._word)
                    n = self.config.rows if which == "A" else self.config.cols
                    entry = unpack_values(self._word, value_bytes(self.config), self.config.wl)[:n]
                    getattr(self.engine, "write_a" if which == "A" else "write_b")(addr, entry[None, :])
                self._word = bytearray()
        elif cmd == Command.SET_SEEDS:
            self._word.append(byte)
            if len(self._word) == 4:
                seed = struct.unpack("<I", bytes(self._word))[0]
                if seed:
                    self.engine.set_seed(self._lane, seed)
                else:
                    self._zero_seed = True
                self._lane += 1
                self._word = bytearray()
        else:
            self._args.append(byte)

    def _end(self):
        if self._crc_rx != self._crc:
            self._count("crc_errors")
            return self._respond(Status.CRC_ERROR)
        # the frame counts before READ_COUNTERS takes its snapshot, as in the RTL
        status, payload = self._execute()
        out = self._respond(status, payload)
        if status is Status.OK and self._cmd == Command.SOFT_RESET:
            self.engine = self._engine_cls(self.config)
            self._reset_link()
        return out

    def _execute(self):
        status, payload_fn = self._act()
        self._count({Status.OK: "frames_ok", Status.BAD_LENGTH: "bad_lengths",
                     Status.BAD_ARGUMENT: "bad_arguments"}[status])
        return status, payload_fn() if payload_fn else b""

    def _act(self):
        """Execute a frame whose CRC passed: ``(status, payload function or None)``."""
        cmd, cfg = Command(self._cmd), self.config
        if cmd is Command.IDENTIFY:
            return Status.OK, self.identity.to_bytes
        if cmd in (Command.WRITE_A, Command.WRITE_B):
            return self._write_check(), None
        if cmd is Command.SET_ROUNDING:
            shift, mode = self._args
            if shift > 32 or mode > 1:
                return Status.BAD_ARGUMENT, None
            self.shift, self.mode = shift, mode
            return Status.OK, None
        if cmd is Command.SET_SEEDS:
            return (Status.BAD_ARGUMENT if self._zero_seed else Status.OK), None
        if cmd is Command.RUN:
            a_base, b_base, k, flags = struct.unpack("<HHIB", bytes(self._args))
            if not 1 <= k <= cfg.depth or a_base + k > cfg.depth or b_base + k > cfg.depth or flags > 3:
                return Status.BAD_ARGUMENT, None
            self.engine.run(a_base, b_base, k, bool(flags & RUN_CLEAR), bool(flags & RUN_DRAIN), self.shift,
                            self.mode)
            if flags & RUN_DRAIN:
                c, sat = self.engine.read_result()
                self._result = (np.array(c, dtype=np.int64), np.array(sat, dtype=bool))
            return Status.OK, None
        if cmd is Command.READ_RESULT:
            result = self._result
            return Status.OK, lambda: encode_result(cfg, *result)
        if cmd is Command.READ_COUNTERS:
            return Status.OK, self._counter_payload
        if cmd is Command.SOFT_RESET:
            return Status.OK, None
        raise AssertionError(cmd)

    def _counter_payload(self):
        values = [self.link_counters[n] for n in LINK_COUNTERS]
        counters = self.engine.counters
        values += [int(counters[n]) for n in self._engine_counter_names]
        return struct.pack(f"<{len(values)}I", *[v & 0xFFFFFFFF for v in values])

    def _respond(self, status, payload=b""):
        return encode_response(self._cmd, self._seq, status, payload)


def counter_names():
    """Names of the READ_COUNTERS fields in order: :data:`LINK_COUNTERS` then the engine's counters."""
    from .engine import COUNTER_NAMES
    return LINK_COUNTERS + tuple(COUNTER_NAMES)


def encode_result(config, c, sat):
    """READ_RESULT payload: per row, ``cols`` values (``value_bytes`` each) then the row's saturation bits."""
    vb = value_bytes(config)
    out = bytearray()
    for r in range(config.rows):
        out += pack_values(c[r], vb)
        bits = 0
        for j in range(config.cols):
            bits |= int(bool(sat[r][j])) << j
        out += bits.to_bytes((config.cols + 7) // 8, "little")
    return bytes(out)


def decode_result(config, payload):
    """Inverse of :func:`encode_result`: ``(c, sat)`` as rows x cols arrays."""
    vb, rb = value_bytes(config), result_row_bytes(config)
    if len(payload) != config.rows * rb:
        raise ValueError(f"READ_RESULT payload must be {config.rows * rb} bytes, not {len(payload)}")
    c = np.zeros((config.rows, config.cols), dtype=np.int64)
    sat = np.zeros((config.rows, config.cols), dtype=bool)
    for r in range(config.rows):
        row = payload[r * rb:(r + 1) * rb]
        c[r] = unpack_values(row[:config.cols * vb], vb, config.wl)
        bits = int.from_bytes(row[config.cols * vb:], "little")
        sat[r] = [(bits >> j) & 1 for j in range(config.cols)]
    return c, sat
