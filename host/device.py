"""Host driver of an fxtrain accelerator: the GEMM backend for a board, the RTL in simulation, or the emulator.

:class:`Device` has the backend duck type the training code uses (``config``, ``seed``, ``gemm``, ``counters``)
and speaks ``docs/protocol.md`` over a transport (:mod:`.transport`).

GEMMs of any shape are sent as the command schedule of :class:`fxtrain.sim.planner.CommandPlanner` (the one
GEMM planner: padding, tiles ``tm`` outer / ``tn`` inner, K chunks of ``depth`` with clear/drain flags, operand
residency with LRU eviction and content digests); ``fxtrain.sim.engine.gemm_via_engine`` plays the same schedule
on the golden model, so the result equals ``fxtrain.sim.gemm.tiled_gemm`` bit for bit. A B chunk stays resident
across ``gemm`` calls when the caller names B's contents with ``b_key`` (e.g. a layer's weights at one optimiser
step); a stale ``b_key`` can cost time but never a wrong result. Any failed command makes the planner forget
residency and the rounding registers.

Members
-------
DeviceError, DeviceTimeout, DeviceMismatch
    Errors; messages name the command and the reason.
ResidentMemory
    Re-exported from :mod:`fxtrain.sim.planner`.
Device
    The driver.
open_device
    A :class:`Device` from a spec string: ``emu``, ``sim:verilator``, ``sim:icarus``, ``serial:PORT@BAUD``.
open_backend
    Like :func:`open_device`, plus ``emu:exact`` and ``emu:fast`` (``fxtrain.host.emulator``).
"""

from __future__ import annotations

import hashlib
import importlib
import time
from dataclasses import dataclass

import numpy as np

from ..sim.gemm import EngineConfig, check_gemm
from ..sim.engine import RESET_LANE_STATE
from ..sim.lfsr import lane_advance, lane_seeds
from ..sim.payloads import (COUNTER, PROTOCOL_VERSION, ROUNDING_ARGS, RUN_ARGS, SEED, WRITE_HEADER, Identity,
                            counter_names, decode_result, pack_values, result_bytes, value_bytes, write_frames)
from ..sim.planner import (CommandPlanner, ReadResult, Reused, Run, SetRounding, WriteOperand, ResidentMemory,
                           plan_gemm)
from ..sim.wire import Command, ResponseParser, Status, encode_request
from .pipeline import LinkFault, Pipeline

__all__ = ["DeviceError", "DeviceTimeout", "DeviceMismatch", "ResidentMemory", "DeviceGemmResult", "Device",
           "open_device", "open_backend", "IDEMPOTENT", "NOT_EXECUTED"]


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


@dataclass
class DeviceGemmResult:
    c: np.ndarray
    saturated: np.ndarray


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
    identify, seed, gemm, device_counters, reset, close
    """

    def __init__(self, transport, expect=None, *, timeout=5.0, retries=3, residency=True):
        self.transport = transport
        self.residency = bool(residency)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._seq = 0
        self._parser = ResponseParser()
        self.counters = dict.fromkeys(("gemms", "macs", "outputs", "saturated", "runs", "bytes_sent",
                                       "bytes_received", "payload_sent", "payload_received", "frames", "retries",
                                       "rewinds", "a_entries_sent", "b_entries_sent", "b_entries_reused"), 0)
        self._lane_base = None          # lane states after the last seed()/reset() (None: unknown)
        self._lane_steps = 0            # lane advances since then
        self.identity = self.identify()
        if self.identity.version != PROTOCOL_VERSION:
            raise DeviceMismatch(f"Device on {transport.name} speaks protocol version {self.identity.version}, "
                                 f"this host speaks version {PROTOCOL_VERSION}")
        self.config = self.identity.config
        self._check_expected(expect)
        # silence long enough for the device to abandon any partial frame (twice its frame timeout)
        transport.quiet_time = max(transport.quiet_time, 2 * self.identity.frame_timeout / self.identity.clk_freq)
        self.planner = CommandPlanner(self.config, residency=self.residency)
        self.pipelined = self.identity.rx_buffer > 0

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

    def _next_seq(self):
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        return seq

    def _exchange(self, cmd, payload=b"", expect_len=None, lost=None):
        """Send one request and return the response payload; retries as documented in :data:`IDEMPOTENT`.
        ``lost``: exception class raised when a non-idempotent request's answer is lost (default DeviceError)."""
        cmd = Command(cmd)
        attempts = 1 + self.retries
        why = ""
        for attempt in range(attempts):
            if attempt:
                self.counters["retries"] += 1
                self.transport.resync()
                self._parser = ResponseParser()
            seq = self._next_seq()
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
        if lost is not None and cmd not in IDEMPOTENT and not why.startswith("the device answered"):
            error = lost
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
        return Identity.from_bytes(self._exchange(Command.IDENTIFY, expect_len=Identity.SIZE))

    def seed(self, seed):
        """Load the lanes with ``sim.lfsr.lane_seeds(seed, lanes)`` (§4.3)."""
        seeds = lane_seeds(seed, self.config.lanes, self.config.lane_width)
        self._lane_base = None
        self._set_lanes(seeds)
        self._lane_base, self._lane_steps = list(seeds), 0

    def _set_lanes(self, states):
        self._exchange(Command.SET_SEEDS, b"".join(SEED.pack(s) for s in states), expect_len=0)

    def device_counters(self):
        """The device's counters (link then engine, ``sim.protocol.counter_names()``) as a dict."""
        names = counter_names()
        data = self._exchange(Command.READ_COUNTERS, expect_len=4 * self.identity.n_counters)
        values = [COUNTER.unpack(data[i:i + COUNTER.size])["value"] for i in range(0, len(data), COUNTER.size)]
        return dict(zip(names, values))

    def reset(self):
        """SOFT_RESET: engine state, lanes, counters and rounding registers back to reset values."""
        self._lane_base = None
        try:
            self._exchange(Command.SOFT_RESET, expect_len=0)
        finally:
            self.planner.forget()
        self._lane_base, self._lane_steps = [RESET_LANE_STATE] * self.config.lanes, 0

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def gemm(self, a, b, shift, mode, *, b_key=None):
        """``round(A @ B)`` on the device: ``.c`` (M x N raw int64) and ``.saturated`` (M x N bool).

        ``b_key``: optional hashable naming B's contents; B chunks sent under it stay resident for later calls.
        The commands are :class:`fxtrain.sim.planner.CommandPlanner`'s schedule, pipelined when the device
        reports a receive buffer (:mod:`.pipeline`). Recovery (``docs/protocol.md`` §5.1): when an exchange fails
        in a way that leaves the device's state unknown, the driver resynchronises, forgets residency and the
        rounding registers, loads the lanes with the states they had before the first tile whose result it has
        not received (known from the last ``seed``/``reset``), and sends the rest of the schedule again, one
        request at a time with per-request retries; after ``retries`` such rewinds, or with unknown lane
        states, it raises ``DeviceError``. A GEMM therefore returns the golden model's result or raises.
        """
        cfg = self.config
        a, b, shift, mode = check_gemm(cfg, a, b, shift, mode, "device")
        plan = plan_gemm(cfg, a.shape[0], a.shape[1], b.shape[1])
        out = _Output(plan, *plan.pad(a, b))
        steps0, rewinds = self._lane_steps, 0
        while True:
            try:
                if rewinds:
                    self._set_lanes([lane_advance(s, steps0 + out.received * cfg.rows, cfg.lane_width)
                                     for s in self._lane_base])
                self._send_schedule(plan, out, (shift, int(mode)), b_key, pipelined=self.pipelined and not rewinds)
                break
            except LinkFault as fault:
                self.planner.forget()
                rewinds += 1
                self.counters["rewinds"] += 1
                if self._lane_base is None or rewinds > self.retries:
                    why = "lane states unknown (seed or reset the device first)" if self._lane_base is None \
                        else f"{rewinds - 1} rewind(s)"
                    self._lane_base = None
                    raise DeviceError(f"GEMM failed on {self.transport.name} after {out.received} of "
                                      f"{len(plan.tiles)} tiles: {fault.why}; not recovered: {why}") from None
                self.transport.resync()
                self._parser = ResponseParser()
            except BaseException:
                self.planner.forget()
                self._lane_base = None
                raise
        self._lane_steps = steps0 + len(plan.tiles) * cfg.rows
        c, sat = out.c[:plan.m, :plan.n], out.sat[:plan.m, :plan.n]
        self.counters["gemms"] += 1
        self.counters["macs"] += plan.m * plan.k * plan.n
        self.counters["outputs"] += plan.m * plan.n
        self.counters["saturated"] += int(sat.sum())
        return DeviceGemmResult(c, sat)

    def _send_schedule(self, plan, out, rounding, b_key, pipelined):
        """Send the schedule from tile ``out.received`` on (pipelined, or one exchange at a time)."""
        cfg = self.config
        if pipelined:
            pipe = Pipeline(self.transport, self.identity.rx_buffer, self.timeout, self._wire_time, self.counters,
                            self._next_seq)
            send = pipe.send
        else:
            pipe = None

            def send(cmd, payload=b"", expect_len=0, on_ok=None):
                answer = self._exchange(cmd, payload, expect_len, lost=LinkFault)
                if on_ok is not None:
                    on_ok(answer)
        vb = value_bytes(cfg)
        for item in self.planner.schedule(plan, rounding, b_key=b_key, digest=out.digest, first_tile=out.received):
            if isinstance(item, WriteOperand):
                entries = out.block(item.which, item.index, item.chunk)
                cmd = Command.WRITE_A if item.which == "A" else Command.WRITE_B
                for start, count in write_frames(cfg, item.which, len(entries), self.identity.rx_buffer):
                    send(cmd, WRITE_HEADER.pack(item.addr + start, count) +
                         pack_values(entries[start:start + count], vb))
                self.counters["a_entries_sent" if item.which == "A" else "b_entries_sent"] += len(entries)
            elif isinstance(item, Reused):
                self.counters["b_entries_reused"] += item.entries if item.which == "B" else 0
            elif isinstance(item, Run):
                send(Command.RUN, RUN_ARGS.pack(item.a_base, item.b_base, item.k, item.flags))
                self.counters["runs"] += 1
            elif isinstance(item, SetRounding):
                send(Command.SET_ROUNDING, ROUNDING_ARGS.pack(*item.rounding))
            elif isinstance(item, ReadResult):
                send(Command.READ_RESULT, b"", result_bytes(cfg), out.place)
        if pipe is not None:
            pipe.flush()


class _Output:
    """The padded operands and result of one GEMM on the device; tiles arrive in schedule order."""

    def __init__(self, plan, ap, bp):
        self.plan, self.ap, self.bp = plan, ap, bp
        self.c = np.zeros((plan.mp, plan.np_), dtype=np.int64)
        self.sat = np.zeros((plan.mp, plan.np_), dtype=bool)
        self.received = 0

    def block(self, which, index, chunk):
        if which == "A":
            return self.plan.a_block(self.ap, index, chunk)
        return self.plan.b_block(self.bp, index, chunk)

    def digest(self, which, index, chunk):
        return _digest(self.block(which, index, chunk))

    def place(self, payload):
        rs, cs = self.plan.tile_slices(*self.plan.tiles[self.received])
        self.c[rs, cs], self.sat[rs, cs] = decode_result(self.plan.config, payload)
        self.received += 1


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


def open_backend(spec, *, config=None, seed=0, **options):
    """A GEMM backend: ``emu:exact`` / ``emu:fast`` map to ``fxtrain.host.emulator`` (when that module exists),
    anything else to :func:`open_device` (seeded with ``seed``)."""
    if spec in ("emu:exact", "emu:fast"):
        try:
            emulator = importlib.import_module("fxtrain.host.emulator")
        except ImportError as error:
            raise ValueError(f"Backend {spec!r} needs fxtrain.host.emulator, which is not available: {error}") \
                from None
        cls = emulator.ExactEmulator if spec == "emu:exact" else emulator.FastEmulator
        return cls(_parse_config(config), seed=seed)
    device = open_device(spec, config=config, **options)
    device.seed(seed)
    return device
