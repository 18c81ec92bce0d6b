"""Host driver of an fxtrain accelerator: the GEMM backend for a board, the RTL in simulation, or the emulator.

:class:`Device` implements :class:`fxtrain.host.backend.Backend` (the registry's ``sim:…``, ``serial:…`` and
``device:…`` specs open one) and speaks ``docs/protocol.md`` over a transport (:mod:`.transport`).

GEMMs of any shape are tiled exactly like ``fxtrain.sim.engine.gemm_via_engine`` (and therefore equal
``fxtrain.sim.gemm.tiled_gemm`` bit for bit): A is zero-padded to a multiple of ``rows`` rows and B to a multiple
of ``cols`` columns; output tiles go ``tm`` outer, ``tn`` inner; K is split into chunks of at most ``depth``
entries, the first run of a tile has ``clear=1``, the last ``drain=1`` and all runs in between neither, so a
K-split keeps accumulating in the wide accumulators and only the complete sum is rounded (§6).

Operand residency: operand memories are managed as address ranges with LRU eviction. An A chunk stays resident
for all tiles ``tn`` of its row ``tm``; a B chunk stays resident across ``gemm`` calls when the caller names
B's contents with ``b_key`` (e.g. a layer's weights at one optimiser step), so weights cross the link once while
they fit in B memory. A B chunk whose content digest differs from the one stored under the same key is sent
again (a stale ``b_key`` can cost time but never a wrong result).

Members
-------
DeviceError, DeviceTimeout, DeviceMismatch
    Errors; messages name the command and the reason.
ResidentMemory
    Address-range allocator with LRU eviction for one operand memory.
Device
    The driver.
open_device
    A :class:`Device` from a device spec string: ``emu``, ``sim:verilator``, ``sim:icarus``, ``serial:PORT@BAUD``
    (unseeded; :func:`fxtrain.host.backend.open_backend` opens and seeds one from a backend spec).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import OrderedDict

import numpy as np

from ..sim.gemm import EngineConfig, GemmResult, check_gemm
from ..sim.lfsr import lane_seeds
from ..sim.protocol import (MAX_LENGTH, PROTOCOL_VERSION, RUN_CLEAR, RUN_DRAIN, Command, Identity, ResponseParser,
                            Status, counter_names, decode_result, encode_request, pack_values,
                            value_bytes)

__all__ = ["DeviceError", "DeviceTimeout", "DeviceMismatch", "ResidentMemory", "Device", "open_device", "IDEMPOTENT",
           "NOT_EXECUTED"]


class DeviceError(RuntimeError):
    pass


class DeviceTimeout(DeviceError):
    pass


class DeviceMismatch(DeviceError):
    pass


#: Commands the driver may re-send after a lost or corrupted response. Any command (RUN included) is re-sent
#: when the device answered a status of :data:`NOT_EXECUTED`; SOFT_RESET is never re-sent.
IDEMPOTENT = frozenset({Command.IDENTIFY, Command.WRITE_A, Command.WRITE_B, Command.SET_ROUNDING,
                        Command.SET_SEEDS, Command.READ_RESULT, Command.READ_COUNTERS})


#: Statuses that mean the request frame was mangled on the way and not executed (the host only sends well-formed
#: frames). An answer with one of them is accepted whatever its CMD/SEQ echo (those may be the mangled bytes).
NOT_EXECUTED = frozenset({Status.CRC_ERROR, Status.TIMEOUT, Status.UNKNOWN_COMMAND, Status.BAD_LENGTH})


class ResidentMemory:
    """Which keyed address ranges of a ``depth``-entry operand memory hold valid data (LRU eviction).

    Members
    -------
    lookup(key, digest) -> address or None
        Address of a resident range with this key and content digest (and marks it recently used).
    allocate(key, digest, length) -> address
        Reserves ``length`` entries for ``key`` (evicting least recently used ranges until a gap fits).
    clear()
        Forget everything (after a reset).
    """

    def __init__(self, depth):
        self.depth = depth
        self._ranges = OrderedDict()      # key -> (start, length, digest), least recently used first

    def lookup(self, key, digest):
        entry = self._ranges.get(key)
        if entry is None or entry[2] != digest:
            return None
        self._ranges.move_to_end(key)
        return entry[0]

    def _gap(self, length):
        spans = sorted((s, s + n) for s, n, _ in self._ranges.values())
        pos = 0
        for start, end in spans:
            if start - pos >= length:
                return pos
            pos = max(pos, end)
        return pos if self.depth - pos >= length else None

    def allocate(self, key, digest, length):
        if not 1 <= length <= self.depth:
            raise ValueError(f"Cannot allocate {length} entries in a memory of depth {self.depth}")
        self._ranges.pop(key, None)
        while (start := self._gap(length)) is None:
            self._ranges.popitem(last=False)
        self._ranges[key] = (start, length, digest)
        return start

    def clear(self):
        self._ranges.clear()

    def __len__(self):
        return len(self._ranges)


def _digest(array):
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()


class Device:
    """An accelerator behind a transport.

    Parameters
    ----------
    transport : fxtrain.host.transport.Transport
    expect : EngineConfig or dict, optional
        Refuse (``DeviceMismatch``) a device whose geometry differs: an ``EngineConfig`` must equal the device's;
        a dict may name any of ``rows, cols, wl, depth, max_k_log2, clk_freq, baud``.
    timeout : float
        Seconds to wait for a response (plus the wire time of the exchange at the device's baud rate).
    retries : int
        Extra attempts for an idempotent exchange that failed (CRC error either way, or no answer).
    residency : bool
        Keep operands resident (default). ``False`` sends the A and B chunk of every run (the baseline of
        ``bench/link_efficiency.py``).

    Members
    -------
    identity : fxtrain.sim.protocol.Identity
    config : EngineConfig
    counters : dict
        Host-side totals: ``gemms, macs, outputs, saturated`` (the backend duck type), ``runs``,
        ``bytes_sent, bytes_received``, ``payload_sent, payload_received`` (payload bytes of those), ``frames``,
        ``retries``, ``b_entries_sent, b_entries_reused, a_entries_sent``.
    accepts_torch : bool
        False (numpy operands and results).
    restores_state : bool
        False: the lane states cannot be read back, so ``state_dict`` holds the counters only.
    identify, seed, gemm, state_dict, load_state_dict, device_counters, reset, close
    """

    accepts_torch = False
    restores_state = False

    def __init__(self, transport, expect=None, *, timeout=5.0, retries=3, residency=True):
        self.transport = transport
        self.residency = bool(residency)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._seq = 0
        self._parser = ResponseParser()
        self.counters = dict.fromkeys(("gemms", "macs", "outputs", "saturated", "runs", "bytes_sent",
                                       "bytes_received", "payload_sent", "payload_received", "frames", "retries",
                                       "a_entries_sent", "b_entries_sent", "b_entries_reused"), 0)
        self._gemm_id = 0
        self.identity = self.identify()
        if self.identity.version != PROTOCOL_VERSION:
            raise DeviceMismatch(f"Device on {transport.name} speaks protocol version {self.identity.version}, "
                                 f"this host speaks version {PROTOCOL_VERSION}")
        self.config = self.identity.config
        self._check_expected(expect)
        # silence long enough for the device to abandon any partial frame (twice its frame timeout)
        transport.quiet_time = max(transport.quiet_time, 2 * self.identity.frame_timeout / self.identity.clk_freq)
        self._a_mem = ResidentMemory(self.config.depth)
        self._b_mem = ResidentMemory(self.config.depth)
        self._rounding = None

    def _check_expected(self, expect):
        if expect is None:
            return
        if isinstance(expect, EngineConfig):
            expect = {f: getattr(expect, f) for f in ("rows", "cols", "wl", "depth", "max_k_log2")}
        if not isinstance(expect, dict):
            raise TypeError(f"expect must be an EngineConfig or a dict, not {expect!r}")
        for field, want in expect.items():
            have = getattr(self.identity, field, None)
            if have is None:
                raise ValueError(f"Unknown identity field {field!r} in expect")
            if have != want:
                raise DeviceMismatch(f"Device on {self.transport.name} has {field} = {have}, expected {want} "
                                     f"(device: {self.identity})")

    # -- exchanges --

    def _wire_time(self, nbytes):
        baud = getattr(self, "identity", None) and self.identity.baud
        return 10 * nbytes / baud if baud else 0.0

    def _exchange(self, cmd, payload=b"", expect_len=None):
        """Send one request and return the response payload; retries as documented in :data:`IDEMPOTENT`."""
        cmd = Command(cmd)
        attempts = 1 + self.retries
        why = ""
        for attempt in range(attempts):
            if attempt:
                self.counters["retries"] += 1
                self.transport.resync()
                self._parser = ResponseParser()
            seq = self._seq
            self._seq = (self._seq + 1) & 0xFF
            frame = encode_request(cmd, seq, payload)
            self.transport.write(frame)
            self.counters["bytes_sent"] += len(frame)
            self.counters["payload_sent"] += len(payload)
            self.counters["frames"] += 1
            response = self._await(cmd, seq, len(frame) + (expect_len or 0))
            if response is None:
                why = f"no answer within {self.timeout} s"
                if cmd in IDEMPOTENT:
                    continue
                break
            if not response.crc_ok:
                why = "the response failed its CRC"
                if cmd in IDEMPOTENT:
                    continue
                break
            if response.status in NOT_EXECUTED and cmd is not Command.SOFT_RESET:
                why = f"the device answered {Status(response.status).name}"
                continue
            if response.status != Status.OK:
                try:
                    name = Status(response.status).name
                except ValueError:
                    name = f"unknown status 0x{response.status:02x}"
                raise DeviceError(f"{cmd.name} failed on {self.transport.name}: the device answered {name} "
                                  f"(request payload {len(payload)} bytes)")
            self.counters["payload_received"] += len(response.payload)
            if expect_len is not None and len(response.payload) != expect_len:
                raise DeviceError(f"{cmd.name} on {self.transport.name}: response payload has "
                                  f"{len(response.payload)} bytes, expected {expect_len}")
            return response.payload
        error = DeviceTimeout if why.startswith("no answer") else DeviceError
        raise error(f"{cmd.name} failed on {self.transport.name} after {attempt + 1} attempt(s): {why}")

    def _await(self, cmd, seq, nbytes):
        deadline = time.monotonic() + self.timeout + self._wire_time(nbytes)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.transport.read(min(left, 0.5))
            self.counters["bytes_received"] += len(data)
            for response in self._parser.feed(data):
                if (response.seq == seq and response.cmd == cmd) or \
                        (response.crc_ok and response.status in NOT_EXECUTED):
                    return response
                if not response.crc_ok and self._parser.pending == 0:
                    return response      # a corrupted answer (to us, most likely)

    # -- commands --

    def identify(self):
        """Ask the device for its :class:`~fxtrain.sim.protocol.Identity`."""
        return Identity.from_bytes(self._exchange(Command.IDENTIFY, expect_len=28))

    def seed(self, seed):
        """Load the lanes with ``sim.lfsr.lane_seeds(seed, lanes)`` (§4.3)."""
        seeds = lane_seeds(seed, self.config.lanes, self.config.lane_width)
        self._exchange(Command.SET_SEEDS, struct.pack(f"<{len(seeds)}I", *seeds), expect_len=0)

    def device_counters(self):
        """The device's counters (link then engine, ``sim.protocol.counter_names()``) as a dict."""
        names = counter_names()
        data = self._exchange(Command.READ_COUNTERS, expect_len=4 * self.identity.n_counters)
        values = struct.unpack(f"<{self.identity.n_counters}I", data)
        return dict(zip(names, values))

    def reset(self):
        """SOFT_RESET: engine state, lanes, counters and rounding registers back to reset values."""
        self._exchange(Command.SOFT_RESET, expect_len=0)
        self._a_mem.clear()
        self._b_mem.clear()
        self._rounding = None

    def state_dict(self):
        """The host-side counters (the device's lane states cannot be read back: ``restores_state`` is False)."""
        return {"kind": "device", "counters": dict(self.counters)}

    def load_state_dict(self, state):
        if state.get("kind") != "device":
            raise ValueError(f"Cannot load a {state.get('kind')!r} backend state into a Device")
        self.counters = dict(state["counters"])

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write_entries(self, cmd, addr, entries):
        vb = value_bytes(self.config)
        e = entries.shape[1] * vb
        per_frame = (MAX_LENGTH - 4) // e
        for start in range(0, len(entries), per_frame):
            part = entries[start:start + per_frame]
            payload = struct.pack("<HH", addr + start, len(part)) + pack_values(part, vb)
            self._exchange(cmd, payload, expect_len=0)

    def _resident(self, mem, cmd, key, block):
        digest = _digest(block)
        if not self.residency:
            mem.clear()
        addr = mem.lookup(key, digest)
        if addr is not None:
            return addr, False
        addr = mem.allocate(key, digest, len(block))
        self._write_entries(cmd, addr, block)
        return addr, True

    def gemm(self, a, b, shift, mode, *, b_key=None):
        """``round(A @ B)`` on the device: ``.c`` (M x N raw int64) and ``.saturated`` (M x N bool).

        ``b_key``: optional hashable naming B's contents; B chunks sent under it stay resident for later calls.
        """
        cfg = self.config
        a, b, shift, mode = check_gemm(cfg, a, b, shift, mode, "device")
        m, k = a.shape
        n = b.shape[1]
        if self._rounding != (shift, int(mode)):
            self._exchange(Command.SET_ROUNDING, bytes([shift, int(mode)]), expect_len=0)
            self._rounding = (shift, int(mode))
        rows, cols, depth = cfg.rows, cfg.cols, cfg.depth
        mt, nt = -(-m // rows), -(-n // cols)
        ap = np.zeros((mt * rows, k), dtype=np.int64)
        ap[:m] = a
        bp = np.zeros((k, nt * cols), dtype=np.int64)
        bp[:, :n] = b
        c = np.zeros((mt * rows, nt * cols), dtype=np.int64)
        sat = np.zeros((mt * rows, nt * cols), dtype=bool)
        chunks = [(k0, min(k, k0 + depth)) for k0 in range(0, k, depth)]
        self._gemm_id += 1
        b_scope = ("B", b_key, b.shape) if b_key is not None else ("B-call", self._gemm_id)
        result_len = rows * (cols * value_bytes(cfg) + (cols + 7) // 8)
        for tm in range(mt):
            for tn in range(nt):
                for k0, k1 in chunks:
                    a_block = ap[tm * rows:(tm + 1) * rows, k0:k1].T
                    b_block = bp[k0:k1, tn * cols:(tn + 1) * cols]
                    a_addr, sent = self._resident(self._a_mem, Command.WRITE_A, ("A", self._gemm_id, tm, k0),
                                                  a_block)
                    self.counters["a_entries_sent"] += len(a_block) if sent else 0
                    b_addr, sent = self._resident(self._b_mem, Command.WRITE_B, b_scope + (tn, k0), b_block)
                    self.counters["b_entries_sent" if sent else "b_entries_reused"] += len(b_block)
                    flags = (RUN_CLEAR if k0 == 0 else 0) | (RUN_DRAIN if k1 == k else 0)
                    self._exchange(Command.RUN, struct.pack("<HHIB", a_addr, b_addr, k1 - k0, flags),
                                   expect_len=0)
                    self.counters["runs"] += 1
                tile_c, tile_sat = decode_result(cfg, self._exchange(Command.READ_RESULT, expect_len=result_len))
                c[tm * rows:(tm + 1) * rows, tn * cols:(tn + 1) * cols] = tile_c
                sat[tm * rows:(tm + 1) * rows, tn * cols:(tn + 1) * cols] = tile_sat
        c, sat = c[:m, :n], sat[:m, :n]
        self.counters["gemms"] += 1
        self.counters["macs"] += m * k * n
        self.counters["outputs"] += m * n
        self.counters["saturated"] += int(sat.sum())
        return GemmResult(c, sat)


def _parse_config(config):
    if config is None:
        return EngineConfig()
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    return config


def open_device(spec, *, config=None, expect=None, timeout=None, retries=3, **transport_options):
    """A :class:`Device` for ``spec``.

    ``emu`` (the protocol emulator over the engine model, ``config`` or the default ``EngineConfig``),
    ``sim:verilator`` / ``sim:icarus`` (the SoC's RTL in simulation; ``config`` defaults to a 2x2 engine of
    depth 32), ``serial:PORT@BAUD`` (a board; PORT may be a pyserial URL, BAUD defaults to 3000000).
    """
    from .transport import EmulatorTransport, SerialTransport, SimulationTransport

    if not isinstance(spec, str):
        raise TypeError(f"Device spec must be a string, not {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind == "emu" and rest == "":
        from ..sim.protocol import ProtocolEmulator
        transport = EmulatorTransport(ProtocolEmulator(_parse_config(config), **transport_options))
        default_timeout = 1.0
    elif kind == "sim" and rest in ("verilator", "icarus"):
        transport = SimulationTransport(rest, config, **transport_options)
        default_timeout = 60.0
    elif kind == "serial" and rest:
        port, _, baud = rest.rpartition("@") if "@" in rest else (rest, "", "3000000")
        try:
            baud = int(baud)
        except ValueError:
            raise ValueError(f"Baud rate in device spec {spec!r} must be an integer, not {baud!r}") from None
        transport = SerialTransport(port, baud)
        default_timeout = 2.0
    else:
        raise ValueError(f"Device spec must be 'emu', 'sim:verilator', 'sim:icarus' or 'serial:PORT@BAUD', "
                         f"not {spec!r}")
    try:
        return Device(transport, expect=expect, timeout=default_timeout if timeout is None else timeout,
                      retries=retries)
    except BaseException:
        transport.close()
        raise

