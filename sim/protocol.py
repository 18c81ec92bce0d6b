"""The device side of the host link: :class:`ProtocolEmulator` answers every byte sequence exactly like the RTL
(:mod:`fxtrain.rtl.framing`, :mod:`fxtrain.rtl.command`), over the engine golden model.

This module is the normative reference of ``docs/protocol.md``. The protocol has three parts, each defined once:
the wire codec (:mod:`.wire`: frames, CRC, codes, the host's response parser), the payload layouts
(:mod:`.payloads`: what each command carries) and the device behaviour (here). The names of the first two are
re-exported here, so ``from fxtrain.sim.protocol import Command`` keeps working; new code imports them from
their own module.

Members
-------
ProtocolEmulator
    Byte-level device emulator over :class:`fxtrain.sim.engine.EngineModel`.
"""

from __future__ import annotations

import enum

import numpy as np

from .gemm import EngineConfig
from .payloads import *  # noqa: F401,F403  (re-exported: the protocol's payload layouts)
from .payloads import (COUNTER, DEFAULT_RX_BUFFER, LINK_COUNTERS, ROUNDING_ARGS, RUN_ARGS, RUN_CLEAR, RUN_DRAIN,
                       RUN_LOAD, RUN_SAVE, RUN_TILES_ARGS, SEED, WRITE_HEADER, Identity, encode_result, entry_bytes, operand_depth,
                       request_length_range, run_tiles_ok, unpack_values, value_bytes)
from .payloads import __all__ as _payload_names
from .wire import *  # noqa: F401,F403  (re-exported: the protocol's wire codec)
from .wire import CRC_INIT, REQUEST_SOF, Command, Status, crc16, crc16_update, encode_response
from .wire import __all__ as _wire_names

__all__ = ["ProtocolEmulator"] + list(_wire_names) + list(_payload_names)


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
    rx_buffer : int
        Request bytes the device promises to buffer (reported by IDENTIFY; the emulator itself never loses a
        byte, it executes each request as it arrives).

    Members
    -------
    engine : fxtrain.sim.engine.EngineModel
    identity : Identity
    link_counters : dict
    """

    def __init__(self, config=EngineConfig(), clk_freq=12_000_000, baud=3_000_000, frame_timeout=None,
                 rx_buffer=DEFAULT_RX_BUFFER):
        from .engine import COUNTER_NAMES, EngineModel
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {type(config).__name__}")
        self.config = config
        self._engine_cls = EngineModel
        self._engine_counter_names = tuple(COUNTER_NAMES)
        self.identity = Identity.from_parameters(config, clk_freq, baud, frame_timeout, len(COUNTER_NAMES), rx_buffer)
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
                    and self._count_in >= WRITE_HEADER.size):
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
        done_before = (self._count_in - WRITE_HEADER.size) // e
        buf = bytes(self._word) + chunk
        complete = len(buf) // e
        if complete and self._write_check() is Status.OK:
            addr = WRITE_HEADER.unpack(self._args)["addr"] + done_before
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
        addr, count = WRITE_HEADER.unpack(self._args[:WRITE_HEADER.size]).values()
        e = entry_bytes(self.config, "A" if self._cmd == Command.WRITE_A else "B")
        if count == 0 or self._len != 4 + count * e:
            return Status.BAD_LENGTH
        if addr + count > operand_depth(self.config, "A" if self._cmd == Command.WRITE_A else "B"):
            return Status.BAD_ARGUMENT
        return Status.OK

    def _payload_byte(self, byte):
        cmd = self._cmd
        if cmd in (Command.WRITE_A, Command.WRITE_B):
            if self._count_in < WRITE_HEADER.size:
                self._args.append(byte)
                return
            self._word.append(byte)
            which = "A" if cmd == Command.WRITE_A else "B"
            if len(self._word) == entry_bytes(self.config, which):
                if self._write_check() is Status.OK:
                    addr = (WRITE_HEADER.unpack(self._args)["addr"]
                            + (self._count_in - WRITE_HEADER.size) // len(self._word))
                    n = self.config.rows if which == "A" else self.config.cols
                    entry = unpack_values(self._word, value_bytes(self.config), self.config.wl)[:n]
                    getattr(self.engine, "write_a" if which == "A" else "write_b")(addr, entry[None, :])
                self._word = bytearray()
        elif cmd == Command.SET_SEEDS:
            self._word.append(byte)
            if len(self._word) == SEED.size:
                seed = SEED.unpack(self._word)["seed"]
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
            shift, mode = ROUNDING_ARGS.unpack(self._args).values()
            if shift > 32 or mode > 1:
                return Status.BAD_ARGUMENT, None
            self.shift, self.mode = shift, mode
            return Status.OK, None
        if cmd is Command.SET_SEEDS:
            return (Status.BAD_ARGUMENT if self._zero_seed else Status.OK), None
        if cmd is Command.RUN:
            from .engine import run_is_valid
            slot, a_base, b_base, k, flags = RUN_ARGS.unpack(self._args).values()
            if not run_is_valid(cfg, a_base, b_base, k, flags, slot):
                return Status.BAD_ARGUMENT, None
            self.engine.run(a_base, b_base, k, bool(flags & RUN_CLEAR), bool(flags & RUN_DRAIN), self.shift,
                            self.mode, load=bool(flags & RUN_LOAD), save=bool(flags & RUN_SAVE), slot=slot)
            if flags & RUN_DRAIN:
                c, sat = self.engine.read_result()
                self._result = (np.array(c, dtype=np.int64), np.array(sat, dtype=bool))
            return Status.OK, None
        if cmd is Command.RUN_TILES:
            return self._run_tiles(**RUN_TILES_ARGS.unpack(self._args))
        if cmd is Command.EXPAND:
            return self._expand(bytes(self._args))
        if cmd is Command.READ_RESULT:
            result = self._result
            return Status.OK, lambda: encode_result(cfg, *result)
        if cmd is Command.READ_COUNTERS:
            return Status.OK, self._counter_payload
        if cmd is Command.SOFT_RESET:
            return Status.OK, None
        raise AssertionError(cmd)

    def _run_tiles(self, b_step, a_base, b_base, k, n_tiles, flags):
        """RUN_TILES: ``n_tiles`` clear+drain runs, B of tile ``t`` at ``b_base + t * b_step``; the payload is the
        drained tiles in order, and the result buffer keeps the last one (as after a draining RUN)."""
        if not run_tiles_ok(self.config, b_step, a_base, b_base, k, n_tiles, flags):
            return Status.BAD_ARGUMENT, None
        payload = bytearray()
        for t in range(n_tiles):
            self.engine.run(a_base, b_base + t * b_step, k, True, True, self.shift, self.mode)
            c, sat = self.engine.read_result()
            self._result = (np.array(c, dtype=np.int64), np.array(sat, dtype=bool))
            payload += encode_result(self.config, *self._result)
        return Status.OK, lambda: bytes(payload)

    def _expand(self, args):
        """EXPAND (``sim/conv.py``): A entries generated from the feature map in the B memory."""
        from .conv import EXPAND_ARGS, expand_entries, expand_ok
        if not expand_ok(self.config, args):
            return Status.BAD_ARGUMENT, None
        entries = expand_entries(self.config, self.engine.b_mem, args)
        self.engine.write_a(EXPAND_ARGS.unpack(args)["a_base"], entries)
        return Status.OK, None

    def _counter_payload(self):
        values = [self.link_counters[n] for n in LINK_COUNTERS]
        counters = self.engine.counters
        values += [int(counters[n]) for n in self._engine_counter_names]
        return b"".join(COUNTER.pack(v & 0xFFFFFFFF) for v in values)

    def _respond(self, status, payload=b""):
        return encode_response(self._cmd, self._seq, status, payload)
