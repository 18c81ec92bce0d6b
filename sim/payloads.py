"""Payload layouts of the host link (``docs/protocol.md`` §4): every field, entry and record a frame carries,
defined once and used by the host driver, the protocol emulator, the time model and the RTL.

Members
-------
PROTOCOL_VERSION, MAGIC
    Reported by IDENTIFY; a host refuses a device with another version.
RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE : int
    Bits of RUN's FLAGS.
run_args, run_flags_ok
    The RUN payload; whether a RUN's FLAGS and SLOT are legal on an engine.
FieldLayout
    A fixed little-endian record of unsigned fields: ``pack``, ``unpack``, ``size``, and the same layout as an
    ``amaranth.lib.data.StructLayout`` for the RTL (``as_struct``).
WRITE_HEADER, RUN_ARGS, RUN_TILES_ARGS, ROUNDING_ARGS, SEED, COUNTER : FieldLayout
    WRITE_A/WRITE_B's ``ADDR, COUNT``; RUN's ``A_BASE, B_BASE, K, FLAGS``; RUN_TILES' ``B_STEP, A_BASE, B_BASE,
    K, N_TILES, FLAGS``; SET_ROUNDING's ``SHIFT, MODE``; one SET_SEEDS lane seed; one READ_COUNTERS counter.
value_bytes, entry_bytes, result_row_bytes, result_bytes
    Payload sizes derived from an ``EngineConfig``.
max_tiles, run_tiles_args, run_tiles_ok, run_tiles_cycles
    RUN_TILES: the most tiles one response can carry (16-bit LEN), its payload, the argument rule, the engine's
    busy cycles.
operand_depth
    Entries of the A or B memory (the WRITE and RUN address range).
max_payload
    Largest request payload for a receive buffer.
write_frames
    How a block of operand entries is cut into WRITE frames (``(first entry, entries)`` per frame).
request_length_range
    The legal LEN range of each command.
pack_values, unpack_values
    Raw integers to and from little-endian two's complement fields.
encode_result, decode_result
    The READ_RESULT payload (one tile).
decode_tiles
    A RUN_TILES payload: ``n_tiles`` READ_RESULT payloads back to back.
LINK_COUNTERS, counter_names
    Names of the READ_COUNTERS fields.
default_frame_timeout
    Idle cycles after which a device abandons a started frame (10 ms of its clock).
DEFAULT_RX_BUFFER : int
    Request bytes a device absorbs while it executes (2048; the pipelining rule of ``docs/protocol.md`` §2.2).
Identity
    The IDENTIFY payload as a dataclass; ``Identity.from_parameters`` is what the RTL builds its ROM from.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .gemm import EngineConfig
from .wire import MAX_LENGTH, Command, request_frame_bytes

__all__ = ["PROTOCOL_VERSION", "MAGIC", "RUN_CLEAR", "RUN_DRAIN", "RUN_LOAD", "RUN_SAVE", "run_args", "run_flags_ok", "FieldLayout", "WRITE_HEADER", "RUN_ARGS",
           "RUN_TILES_ARGS", "ROUNDING_ARGS", "SEED", "COUNTER", "value_bytes", "entry_bytes", "operand_depth",
           "result_row_bytes", "result_bytes", "max_tiles", "run_tiles_args", "run_tiles_ok", "run_tiles_cycles",
           "max_payload", "write_frames", "request_length_range", "pack_values", "unpack_values", "encode_result",
           "decode_result", "decode_tiles", "LINK_COUNTERS", "counter_names", "default_frame_timeout",
           "DEFAULT_RX_BUFFER", "FEATURE_EXPAND", "Identity"]

PROTOCOL_VERSION = 3          # 3: EXPAND, RUN's SLOT/LOAD/SAVE, IDENTIFY with FEATURES and PSUM_SLOTS (40 bytes); 2: 32; 1: 28
MAGIC = b"FXTR"

RUN_CLEAR = 1
RUN_DRAIN = 2
RUN_LOAD = 4
RUN_SAVE = 8

LINK_COUNTERS = ("frames_ok", "crc_errors", "unknown_commands", "bad_lengths", "bad_arguments", "timeouts")

_STRUCT_CODES = {1: "B", 2: "H", 4: "I"}


class FieldLayout:
    """A little-endian record of unsigned fields of 1, 2 or 4 bytes, first field first.

    Parameters
    ----------
    name : str
    fields : sequence of (str, int)
        Field names and byte widths.

    Members
    -------
    size : int
        Bytes of the record.
    format : str
        Its ``struct`` format.
    pack(*values) -> bytes ; unpack(data) -> dict
    offset(field) -> int
        Byte offset of a field.
    as_struct()
        ``amaranth.lib.data.StructLayout`` with the same fields in the same bits (first field in the least
        significant bits), so an RTL view of the record's bytes names the same fields.
    """

    def __init__(self, name, fields):
        self.name = name
        self.fields = tuple((str(f), int(n)) for f, n in fields)
        for f, n in self.fields:
            if n not in _STRUCT_CODES:
                raise ValueError(f"Field {f!r} of {name} must be 1, 2 or 4 bytes, not {n}")
        self.format = "<" + "".join(_STRUCT_CODES[n] for _, n in self.fields)
        self.size = struct.calcsize(self.format)

    def pack(self, *values):
        if len(values) != len(self.fields):
            raise ValueError(f"{self.name} has {len(self.fields)} fields {[f for f, _ in self.fields]}, "
                             f"not {len(values)} values")
        for (f, n), v in zip(self.fields, values):
            if not isinstance(v, (int, np.integer)) or not 0 <= v < 1 << (8 * n):
                raise ValueError(f"{self.name} field {f} must fit in {n} unsigned bytes, not {v!r}")
        return struct.pack(self.format, *(int(v) for v in values))

    def unpack(self, data):
        data = bytes(data)
        if len(data) != self.size:
            raise ValueError(f"{self.name} must be {self.size} bytes, not {len(data)}")
        return dict(zip((f for f, _ in self.fields), struct.unpack(self.format, data)))

    def offset(self, field):
        pos = 0
        for f, n in self.fields:
            if f == field:
                return pos
            pos += n
        raise KeyError(f"{self.name} has no field {field!r}")

    def as_struct(self):
        from amaranth.hdl import unsigned
        from amaranth.lib import data

        return data.StructLayout({f: unsigned(8 * n) for f, n in self.fields})

    def __repr__(self):
        return f"FieldLayout({self.name!r}, {self.fields!r})"


WRITE_HEADER = FieldLayout("WRITE header", [("addr", 2), ("count", 2)])
#: RUN (``docs/protocol.md`` §4.4): ``slot`` is the partial-sum slot of a LOAD or SAVE run (ignored otherwise).
RUN_ARGS = FieldLayout("RUN arguments", [("slot", 2), ("a_base", 2), ("b_base", 2), ("k", 4), ("flags", 1)])
#: RUN_TILES (``docs/protocol.md`` §4.9): ``n_tiles`` clear+drain runs of ``k`` entries, A at ``a_base``, B of tile
#: ``t`` at ``b_base + t * b_step``; the response carries the ``n_tiles`` drained tiles in order. ``flags`` must be
#: ``RUN_CLEAR | RUN_DRAIN``. Its 11 bytes lie where RUN_ARGS' fields do (``b_step`` in RUN's ``slot``, ``a_base``,
#: ``b_base``, ``k`` and ``n_tiles`` in RUN's ``k``, ``flags``), so the RTL reads both commands' common fields from
#: the same bits.
RUN_TILES_ARGS = FieldLayout("RUN_TILES arguments", [("b_step", 2), ("a_base", 2), ("b_base", 2), ("k", 2),
                                                     ("n_tiles", 2), ("flags", 1)])
ROUNDING_ARGS = FieldLayout("SET_ROUNDING arguments", [("shift", 1), ("mode", 1)])
SEED = FieldLayout("lane seed", [("seed", 4)])
COUNTER = FieldLayout("counter", [("value", 4)])


def value_bytes(config):
    """Bytes per operand or result value on the wire: ``ceil(wl / 8)``."""
    return (config.wl + 7) // 8


def entry_bytes(config, which):
    """Bytes of one A entry (``rows`` values) or B entry (``cols`` values)."""
    if which not in ("A", "B"):
        raise ValueError(f"Operand must be 'A' or 'B', not {which!r}")
    return (config.rows if which == "A" else config.cols) * value_bytes(config)


def operand_depth(config, which):
    """Entries of the A memory (``depth``) or the B memory (``b_depth``): the address range of WRITE_A/WRITE_B
    and of RUN's A_BASE/B_BASE."""
    if which not in ("A", "B"):
        raise ValueError(f"Operand must be 'A' or 'B', not {which!r}")
    return config.depth if which == "A" else config.b_depth


def result_row_bytes(config):
    """Bytes of one result row: ``cols`` values, then ``ceil(cols/8)`` saturation-flag bytes."""
    return config.cols * value_bytes(config) + (config.cols + 7) // 8


def result_bytes(config):
    """Bytes of the READ_RESULT payload: ``rows`` result rows."""
    return config.rows * result_row_bytes(config)


def max_tiles(config):
    """The most tiles one RUN_TILES may run: ``n_tiles * result_bytes`` must fit the 16-bit LEN, and at most
    the A ``depth`` (it keeps the tile counter narrow; a row of LeNet's widest GEMM has 128 tiles)."""
    return min(MAX_LENGTH // result_bytes(config), config.depth)


def run_args(a_base, b_base, k, flags, slot=0):
    """The RUN payload (:data:`RUN_ARGS`)."""
    return RUN_ARGS.pack(slot, a_base, b_base, k, flags)


def run_flags_ok(config, flags, slot):
    """Whether a RUN's ``flags`` and ``slot`` are legal (else BAD_ARGUMENT, or a rejected run in the engine):
    only the four flag bits, LOAD not with CLEAR, SAVE not with DRAIN, and a LOAD or SAVE run's ``slot`` below
    ``config.psum_slots`` (so an engine without a partial-sum memory refuses both)."""
    if flags > (RUN_CLEAR | RUN_DRAIN | RUN_LOAD | RUN_SAVE):
        return False
    if (flags & RUN_LOAD and flags & RUN_CLEAR) or (flags & RUN_SAVE and flags & RUN_DRAIN):
        return False
    return not flags & (RUN_LOAD | RUN_SAVE) or slot < config.psum_slots


def run_tiles_args(a_base, b_base, b_step, k, n_tiles):
    """The RUN_TILES payload (:data:`RUN_TILES_ARGS`, flags ``RUN_CLEAR | RUN_DRAIN``)."""
    return RUN_TILES_ARGS.pack(b_step, a_base, b_base, k, n_tiles, RUN_CLEAR | RUN_DRAIN)


def run_tiles_ok(config, b_step, a_base, b_base, k, n_tiles, flags):
    """Whether RUN_TILES arguments are legal (else the device answers BAD_ARGUMENT and runs nothing):
    ``1 <= n_tiles <= max_tiles``, ``1 <= k``, ``a_base + k <= depth``, ``b_step <= b_depth``, every tile's B
    range ``b_base + t * b_step + k <= b_depth`` (``t = n_tiles - 1`` is the largest) and ``flags == RUN_CLEAR |
    RUN_DRAIN``."""
    depth, b_depth = operand_depth(config, "A"), operand_depth(config, "B")
    return (1 <= n_tiles <= max_tiles(config) and k >= 1 and a_base + k <= depth and b_step <= b_depth
            and b_base + (n_tiles - 1) * b_step + k <= b_depth and flags == RUN_CLEAR | RUN_DRAIN)


def run_tiles_cycles(config, k, n_tiles):
    """Engine busy cycles of a RUN_TILES: ``n_tiles`` clear+drain runs (``sim.engine.run_cycles(k, 1)`` each).

    The device also spends ``n_tiles`` cycles checking the B ranges before it answers (not engine cycles), and
    the engine waits (``stall_out``, not busy) while both result banks hold tiles the link has not taken."""
    from .engine import run_cycles
    return n_tiles * run_cycles(config, k, True)


def max_payload(rx_buffer):
    """Largest request payload a host sends to a device with an ``rx_buffer``-byte receive buffer (0: none
    promised): the whole frame must fit the buffer (``docs/protocol.md`` §2.2), and LEN is 16 bits."""
    if not rx_buffer:
        return MAX_LENGTH
    return min(MAX_LENGTH, rx_buffer - request_frame_bytes(0))


def write_frames(config, which, entries, rx_buffer=0):
    """``[(first, count), ...]``: the WRITE_A/WRITE_B frames that carry a block of ``entries`` entries, each as
    full as :func:`max_payload` allows (``WRITE_HEADER`` then ``count`` entries)."""
    per_frame = (max_payload(rx_buffer) - WRITE_HEADER.size) // entry_bytes(config, which)
    if per_frame < 1:
        raise ValueError(f"A {rx_buffer}-byte receive buffer cannot hold a WRITE_{which} frame of one entry")
    return [(start, min(per_frame, entries - start)) for start in range(0, entries, per_frame)]


def request_length_range(config, cmd):
    """``(min, max)`` legal LEN of a request, or ``None`` for an unknown command (EXPAND on a device without
    an expander is unknown)."""
    try:
        cmd = Command(cmd)
    except ValueError:
        return None
    if cmd in (Command.WRITE_A, Command.WRITE_B):
        e = entry_bytes(config, "A" if cmd is Command.WRITE_A else "B")
        depth = operand_depth(config, "A" if cmd is Command.WRITE_A else "B")
        return WRITE_HEADER.size + e, min(MAX_LENGTH, WRITE_HEADER.size + depth * e)
    if cmd is Command.EXPAND and not config.expander:
        return None
    from .conv import EXPAND_ARGS
    fixed = {Command.SET_ROUNDING: ROUNDING_ARGS.size, Command.SET_SEEDS: SEED.size * config.lanes,
             Command.RUN: RUN_ARGS.size, Command.RUN_TILES: RUN_TILES_ARGS.size, Command.EXPAND: EXPAND_ARGS.size}
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
    if len(payload) != result_bytes(config):
        raise ValueError(f"READ_RESULT payload must be {result_bytes(config)} bytes, not {len(payload)}")
    c = np.zeros((config.rows, config.cols), dtype=np.int64)
    sat = np.zeros((config.rows, config.cols), dtype=bool)
    for r in range(config.rows):
        row = payload[r * rb:(r + 1) * rb]
        c[r] = unpack_values(row[:config.cols * vb], vb, config.wl)
        bits = int.from_bytes(row[config.cols * vb:], "little")
        sat[r] = [(bits >> j) & 1 for j in range(config.cols)]
    return c, sat


def decode_tiles(config, payload):
    """A RUN_TILES payload as a list of ``(c, sat)`` tiles (``n_tiles`` :func:`encode_result` payloads)."""
    rb = result_bytes(config)
    if len(payload) % rb:
        raise ValueError(f"RUN_TILES payload of {len(payload)} bytes is not a whole number of {rb}-byte tiles")
    return [decode_result(config, payload[i:i + rb]) for i in range(0, len(payload), rb)]


def counter_names():
    """Names of the READ_COUNTERS fields in order: :data:`LINK_COUNTERS` then the engine's counters."""
    from .engine import COUNTER_NAMES
    return LINK_COUNTERS + tuple(COUNTER_NAMES)


#: IDENTIFY FEATURES bit: the device executes EXPAND (convolution mode, :mod:`.conv`).
FEATURE_EXPAND = 1

#: Request bytes a device buffers (``AcceleratorSoC``'s receive FIFO; reported by IDENTIFY as a power of two).
DEFAULT_RX_BUFFER = 2048


def default_frame_timeout(clk_freq):
    """Idle cycles after which a started frame is abandoned: 10 ms of clock, at least 256 cycles."""
    return max(256, int(clk_freq) // 100)


@dataclass(frozen=True)
class Identity:
    """The IDENTIFY payload (40 bytes since protocol version 3; layout in ``docs/protocol.md``).

    Members
    -------
    version, rows, cols, wl, max_k_log2, lane_width, n_counters, depth, clk_freq, baud, frame_timeout, b_depth
        The fields; ``baud`` is 0 for the byte-stream (simulation) variant of the SoC; ``b_depth`` (bytes 28-31,
        new in version 2) the B memory's entries; ``features`` (bytes 32-35, new in version 3) bit 0
        (:data:`FEATURE_EXPAND`): the EXPAND command (convolution mode); ``psum_slots`` (bytes 36-39, new in
        version 3) the partial-sum memory's tiles (0: none).
    rx_buffer_log2 : int
        ``log2`` of the request bytes the device buffers (byte 11, 0 on a device that does not promise any:
        the host then waits for each response before the next request).
    rx_buffer : int
        ``2**rx_buffer_log2`` bytes, or 0.
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
    rx_buffer_log2: int = 0
    b_depth: int = 0
    features: int = 0
    psum_slots: int = 0

    FORMAT = "<4sBBBBBBBBIIIIIII"
    SIZE = struct.calcsize(FORMAT)

    @classmethod
    def from_parameters(cls, config, clk_freq, baud, frame_timeout=None, n_engine_counters=None,
                        rx_buffer=DEFAULT_RX_BUFFER):
        """The identity a SoC built from these parameters reports (``rx_buffer``: a power of two, or 0)."""
        if not isinstance(rx_buffer, int) or rx_buffer < 0 or rx_buffer & (rx_buffer - 1) or rx_buffer == 1:
            raise ValueError(f"Receive buffer must be 0 or a power of two of at least 2 bytes, not {rx_buffer!r}")
        if n_engine_counters is None:
            from .engine import COUNTER_NAMES
            n_engine_counters = len(COUNTER_NAMES)
        return cls(PROTOCOL_VERSION, config.rows, config.cols, config.wl, config.max_k_log2, config.lane_width,
                   len(LINK_COUNTERS) + n_engine_counters, config.depth, int(clk_freq), int(baud),
                   default_frame_timeout(clk_freq) if frame_timeout is None else int(frame_timeout),
                   rx_buffer.bit_length() - 1 if rx_buffer else 0, config.b_depth,
                   FEATURE_EXPAND if config.expander else 0, config.psum_slots)

    def to_bytes(self):
        return struct.pack(self.FORMAT, MAGIC, self.version, self.rows, self.cols, self.wl, self.max_k_log2,
                           self.lane_width, self.n_counters, self.rx_buffer_log2, self.depth, self.clk_freq, self.baud,
                           self.frame_timeout, self.b_depth, self.features, self.psum_slots)

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        if len(data) != cls.SIZE:
            raise ValueError(f"IDENTIFY payload must be {cls.SIZE} bytes (protocol version {PROTOCOL_VERSION}), not "
                             f"{len(data)}")
        (magic, version, rows, cols, wl, max_k_log2, lane_width, n_counters, rx_buffer_log2, depth, clk_freq, baud,
         frame_timeout, b_depth, features, psum_slots) = struct.unpack(cls.FORMAT, data)
        if magic != MAGIC:
            raise ValueError(f"IDENTIFY payload starts with {magic!r}, not {MAGIC!r}: not an fxtrain device")
        return cls(version, rows, cols, wl, max_k_log2, lane_width, n_counters, depth, clk_freq, baud,
                   frame_timeout, rx_buffer_log2, b_depth, features, psum_slots)

    @property
    def rx_buffer(self):
        return 1 << self.rx_buffer_log2 if self.rx_buffer_log2 else 0

    @property
    def config(self):
        return EngineConfig(rows=self.rows, cols=self.cols, wl=self.wl, depth=self.depth,
                            max_k_log2=self.max_k_log2, b_depth=self.b_depth,
                            expander=bool(self.features & FEATURE_EXPAND), psum_slots=self.psum_slots)
