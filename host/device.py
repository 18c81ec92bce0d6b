"""Host driver of an fxtrain accelerator: the GEMM backend for a board, the RTL in simulation, or the emulator.

:class:`Device` implements :class:`fxtrain.host.backend.Backend` (the registry's ``sim:…``, ``serial:…`` and
``device:…`` specs open one) and speaks ``docs/protocol.md`` over a transport (:mod:`.transport`).

GEMMs of any shape are tiled by the one GEMM planner, :mod:`fxtrain.sim.planner` (padding, tiles ``tm`` outer /
``tn`` inner, K chunks of ``depth`` with clear/drain flags, RUN_TILES groups when K fits one chunk, operand
residency with LRU eviction and content digests), which ``fxtrain.sim.engine.gemm_via_engine`` plays on the golden
model, so results equal ``fxtrain.sim.gemm.tiled_gemm`` bit for bit. A B chunk stays resident across ``gemm`` calls
when the caller names B's contents with ``b_key`` (e.g. a layer's weights at one optimiser step); a stale ``b_key``
can cost time but never a wrong result.

Pipelining (``docs/protocol.md`` §2.2, §5.1). When the device reports a receive buffer and the driver manages the
lanes (after ``seed``/``reset``), ``gemm`` sends the planner's whole schedule without waiting, within the buffer
(:mod:`.pipeline`), and waits once at the end. The planner records residency as it plans; a GEMM whose answers all
arrived OK and in order proves every frame arrived intact. At the first missing, corrupted, out-of-order or
not-OK answer the driver forgets all beliefs (below) and finishes the GEMM from the first tile whose result it has
not received with the one-request-at-a-time path of the recovery rules (:mod:`.recovery`).

Recovery (``docs/protocol.md`` §5.2; the rules and the one-request-at-a-time path: :mod:`.recovery`). The driver's
beliefs about the device (residency, rounding registers, the lanes' position) are recorded only after the device
acknowledged, and all are dropped (:meth:`Device._forget`) on any failed attempt or resynchronisation. So every
``gemm`` either equals the golden model bit for bit or raises :class:`DeviceError` (up to CRC-16 collisions of
corrupted frames), and a ``gemm`` that raises leaves the lanes where they were before it.

Members
-------
DeviceError, DeviceTimeout, DeviceMismatch, IDEMPOTENT, NOT_EXECUTED
    Errors (messages name the command and the reason) and retry rules, re-exported from :mod:`.device_errors`.
ResidentMemory
    Re-exported from :mod:`fxtrain.sim.residency`.
Device
    The driver.

A :class:`Device` is opened from a device spec string by :func:`fxtrain.host.device_spec.open_device`.
"""

from __future__ import annotations

import time

from ..sim.engine import RESET_LANE_STATE
from ..sim.gemm import EngineConfig, GemmResult, check_gemm
from ..sim.gemm_plan import plan_gemm
from ..sim.lfsr import lane_advance, lane_seeds
from ..sim.payloads import (COUNTER, MAGIC, PROTOCOL_VERSION, ROUNDING_ARGS, SEED, Identity, counter_names,
                            result_bytes, run_args, run_tiles_args)
from ..sim.planner import CommandPlanner
from ..sim.residency import ResidentMemory
from ..sim.schedule_items import ReadResult, Reused, Run, RunTiles, SetRounding, WriteOperand
from ..sim.wire import Command, ResponseParser, Status, encode_request
from .conv_offload import CONV_COUNTERS, send_conv_item, with_digest
from .device_errors import (IDEMPOTENT, NOT_EXECUTED, DeviceError, DeviceMismatch, DeviceTimeout, NotExecuted,
                            Unanswered)
from .gemm_output import GemmOutput
from .pipeline import LinkFault, Pipeline
from .recovery import one_at_a_time

__all__ = ["DeviceError", "DeviceTimeout", "DeviceMismatch", "ResidentMemory", "Device", "IDEMPOTENT", "NOT_EXECUTED"]


class Device:
    """An accelerator behind a transport.

    Parameters
    ----------
    transport : fxtrain.host.transport.Transport
    expect : EngineConfig or dict, optional
        Refuse (``DeviceMismatch``) a device whose geometry differs: an ``EngineConfig`` must equal the device's;
        a dict may name any of ``rows, cols, wl, depth, b_depth, max_k_log2, clk_freq, baud``.
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
        ``retries``, ``b_entries_sent, b_entries_reused, a_entries_sent``; convolution mode
        (:mod:`.conv_offload`): ``map_entries_sent, map_entries_reused, expands, a_entries_expanded``.
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
                                       "rewinds", "a_entries_sent", "b_entries_sent", "b_entries_reused")
                                      + CONV_COUNTERS, 0)
        self._gemm_id = 0
        # Beliefs about the device's state (module docstring, "Recovery"): recorded only after the device
        # acknowledged, all dropped by _forget() on any failed attempt or resynchronisation.
        self._epoch = 0                  # incremented by every _forget()
        self._a_mem = self._b_mem = None
        self._rounding = None            # (shift, mode) loaded on the device
        self._lane_origin = None         # lane states the driver loaded (seed, reset); None: lanes not managed
        self._lane_advances = 0          # advances since the origin, of acknowledged drains
        self._lanes_synced = False       # the device's lanes are at origin advanced by _lane_advances
        self.identity = self.identify()
        if self.identity.version != PROTOCOL_VERSION:
            raise DeviceMismatch(f"Device on {transport.name} speaks protocol version {self.identity.version}, "
                                 f"this host speaks version {PROTOCOL_VERSION}")
        self.config = self.identity.config
        self._check_expected(expect)
        # silence long enough for the device to abandon any partial frame (twice its frame timeout)
        transport.quiet_time = max(transport.quiet_time, 2 * self.identity.frame_timeout / self.identity.clk_freq)
        self._a_mem = ResidentMemory(self.config.depth)
        self._b_mem = ResidentMemory(self.config.b_depth)
        self.planner = CommandPlanner(self.config, residency=self.residency)
        self.pipelined = self.identity.rx_buffer > 0

    def _check_expected(self, expect):
        if expect is None:
            return
        if isinstance(expect, EngineConfig):
            expect = {f: getattr(expect, f) for f in ("rows", "cols", "wl", "depth", "max_k_log2", "b_depth")}
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

    def _forget(self):
        """Drop the beliefs a failed attempt can falsify: operand residency and the lanes' position.

        Called on every failed attempt (a mangled frame may have written operand entries or lanes anywhere
        before its CRC was checked, and an unanswered RUN may have drained) and on every resynchronisation. The
        rounding registers change only through a CRC-checked SET_ROUNDING or SOFT_RESET; that belief is dropped
        when one of those fails (:meth:`_sync_rounding`, :meth:`reset`)."""
        self._epoch += 1
        for mem in (self._a_mem, self._b_mem):
            if mem is not None:
                mem.clear()
        if getattr(self, "planner", None) is not None:
            self.planner.forget()
        self._lanes_synced = False

    def _resync(self):
        """Wait until the device has abandoned any partial frame and drop what it sent; forget all beliefs."""
        self._forget()
        self.transport.resync()
        self._parser = ResponseParser()

    def _attempt(self, cmd, payload, expect_len):
        """Send one request once and return the response payload.

        Raises :class:`NotExecuted` (the device said the frame was mangled), :class:`Unanswered` (no answer, or
        one that failed its CRC) or :class:`DeviceError` (an error status for a frame that arrived intact). Every
        failure first drops the driver's beliefs (:meth:`_forget`)."""
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        frame = encode_request(cmd, seq, payload)
        self.transport.write(frame)
        self.counters["bytes_sent"] += len(frame)
        self.counters["payload_sent"] += len(payload)
        self.counters["frames"] += 1
        response = self._await(cmd, seq, len(frame) + (expect_len or 0))
        if response is None or not response.crc_ok:
            self._forget()
            raise Unanswered(f"no answer within {self.timeout} s" if response is None
                              else "the response failed its CRC")
        if response.status in NOT_EXECUTED and cmd is not Command.SOFT_RESET:
            self._forget()
            raise NotExecuted(f"the device answered {Status(response.status).name}")
        if response.status != Status.OK:
            self._forget()
            try:
                name = Status(response.status).name
            except ValueError:
                name = f"unknown status 0x{response.status:02x}"
            raise DeviceError(f"{cmd.name} failed on {self.transport.name}: the device answered {name} "
                              f"(request payload {len(payload)} bytes)")
        self.counters["payload_received"] += len(response.payload)
        if expect_len is not None and len(response.payload) != expect_len:
            self._forget()
            raise DeviceError(f"{cmd.name} on {self.transport.name}: response payload has "
                              f"{len(response.payload)} bytes, expected {expect_len}")
        return response.payload

    def _exchange(self, cmd, payload=b"", expect_len=None):
        """Send one request and return the response payload; an :data:`IDEMPOTENT` command is re-sent (after a
        resynchronisation) when its attempt failed, any other command is tried once (``gemm`` re-sends RUN
        itself, after confirming its operands again)."""
        cmd = Command(cmd)
        attempts = 1 + self.retries if cmd in IDEMPOTENT else 1
        for attempt in range(attempts):
            if attempt:
                self.counters["retries"] += 1
                self._resync()
            try:
                return self._attempt(cmd, payload, expect_len)
            except (NotExecuted, Unanswered) as error:
                why = error
        error = DeviceTimeout if str(why).startswith("no answer") else DeviceError
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
        """Ask the device for its :class:`~fxtrain.sim.protocol.Identity` (a device of another protocol version,
        whose payload may have another length, is refused by its version byte: ``DeviceMismatch``)."""
        payload = self._exchange(Command.IDENTIFY)
        if len(payload) > 4 and payload[:4] == MAGIC and payload[4] != PROTOCOL_VERSION:
            raise DeviceMismatch(f"Device on {self.transport.name} speaks protocol version {payload[4]}, "
                                 f"this host speaks version {PROTOCOL_VERSION}")
        return Identity.from_bytes(payload)

    def seed(self, seed):
        """Load the lanes with ``sim.lfsr.lane_seeds(seed, lanes)`` (§4.3); from then on the driver keeps the
        device's lanes where the golden model has them (module docstring, "Recovery")."""
        self._lane_origin = lane_seeds(seed, self.config.lanes, self.config.lane_width)
        self._lane_advances = 0
        self._lanes_synced = False
        self._sync_lanes()

    @property
    def lane_state(self):
        """The lane states the golden model has now (what the device holds once synchronised), or ``None`` when
        the driver has not loaded the lanes (no ``seed``/``reset`` yet)."""
        if self._lane_origin is None:
            return None
        return [lane_advance(s, self._lane_advances, self.config.lane_width) for s in self._lane_origin]

    def _sync_lanes(self):
        """SET_SEEDS with :attr:`lane_state` unless the device's lanes are known to hold it."""
        if self._lanes_synced or self._lane_origin is None:
            return
        states = self.lane_state
        self._exchange(Command.SET_SEEDS, b"".join(SEED.pack(s) for s in states), expect_len=0)
        self._lanes_synced = True        # the acknowledged frame loaded every lane, nothing came after it

    def _sync_rounding(self, shift, mode):
        if self._rounding != (shift, int(mode)):
            self._rounding = None
            self._exchange(Command.SET_ROUNDING, ROUNDING_ARGS.pack(shift, int(mode)), expect_len=0)
            self._rounding = (shift, int(mode))

    def device_counters(self):
        """The device's counters (link then engine, ``sim.protocol.counter_names()``) as a dict."""
        names = counter_names()
        data = self._exchange(Command.READ_COUNTERS, expect_len=4 * self.identity.n_counters)
        values = [COUNTER.unpack(data[i:i + COUNTER.size])["value"] for i in range(0, len(data), COUNTER.size)]
        return dict(zip(names, values))

    def reset(self):
        """SOFT_RESET: engine state, lanes, counters and rounding registers back to reset values."""
        try:
            self._exchange(Command.SOFT_RESET, expect_len=0)
        finally:
            self._forget()               # operand memories are undefined after a reset
            self._rounding = None
        self._lane_origin = [RESET_LANE_STATE] * self.config.lanes
        self._lane_advances = 0
        self._lanes_synced = True

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

    def gemm(self, a, b, shift, mode, *, b_key=None, a_view=None):
        """``round(A @ B)`` on the device: ``.c`` (M x N raw int64) and ``.saturated`` (M x N bool).

        ``b_key``: optional hashable naming B's contents; B chunks sent under it stay resident for later calls.
        ``a_view``: a :class:`fxtrain.sim.conv.ConvView` whose matrix is ``a`` (convolution mode,
        :mod:`.conv_offload`: used on a device with the expander when the map fits, else ignored).
        Pipelined when possible (module docstring); either the result equals the golden model bit for bit or a
        :class:`DeviceError` is raised; a call that raises leaves the lanes where they were before it (module
        docstring, "Recovery").
        """
        cfg = self.config
        a, b, shift, mode = check_gemm(cfg, a, b, shift, mode, "device")
        plan = plan_gemm(cfg, a.shape[0], a.shape[1], b.shape[1])
        out = GemmOutput(plan, *plan.pad(a, b))
        self._gemm_id += 1
        b_scope = ("B", b_key, b.shape) if b_key is not None else ("B-call", self._gemm_id)
        advances = self._lane_advances
        try:
            if self.pipelined and self._lane_origin is not None:
                try:
                    self._sync_lanes()
                    self._pipelined(plan, out, (shift, int(mode)), b_key,
                                    None if a_view is None else with_digest(a_view))
                except LinkFault:
                    self.counters["rewinds"] += 1
                    self._lane_advances = advances + out.received * cfg.rows
                    self._rounding = None          # the pipelined SET_ROUNDING may or may not have executed
                    self._resync()                 # forgets residency (both bookkeepings) and the lanes' sync
            one_at_a_time(self, plan, out, shift, mode, b_scope)
        except BaseException:
            self._lane_advances = advances   # as if this call never happened: the next one re-seeds the lanes
            self._forget()
            raise
        c, sat = out.c[:plan.m, :plan.n], out.sat[:plan.m, :plan.n]
        self.counters["gemms"] += 1
        self.counters["macs"] += plan.m * plan.k * plan.n
        self.counters["outputs"] += plan.m * plan.n
        self.counters["saturated"] += int(sat.sum())
        return GemmResult(c, sat)

    def _pipelined(self, plan, out, rounding, b_key, a_view=None):
        """Send the planner's whole schedule pipelined (:mod:`.pipeline`); :class:`LinkFault` at the first bad
        answer. On success the driver's beliefs are those of the schedule: lanes advanced by every drained tile,
        the rounding registers set."""
        cfg = self.config
        pipe = Pipeline(self.transport, self.identity.rx_buffer, self.timeout, self._wire_time, self.counters,
                        self._next_seq)
        self.planner.rounding = self._rounding
        for item in self.planner.schedule(plan, rounding, b_key=b_key, digest=out.digest, a_view=a_view):
            if send_conv_item(pipe, cfg, item, self.counters):
                continue
            if isinstance(item, WriteOperand):
                entries = out.block(item.which, item.index, item.chunk, item.count)
                pipe.send_entries(cfg, item.which, item.addr, entries)
                self.counters["a_entries_sent" if item.which == "A" else "b_entries_sent"] += len(entries)
            elif isinstance(item, Reused):
                self.counters["b_entries_reused"] += item.entries if item.which == "B" else 0
            elif isinstance(item, Run):
                pipe.send(Command.RUN, run_args(item.a_base, item.b_base, item.k, item.flags, item.slot))
                self.counters["runs"] += 1
            elif isinstance(item, SetRounding):
                self._rounding = None
                pipe.send(Command.SET_ROUNDING, ROUNDING_ARGS.pack(*item.rounding))
            elif isinstance(item, ReadResult):
                pipe.send(Command.READ_RESULT, b"", result_bytes(cfg), out.place)
            elif isinstance(item, RunTiles):
                pipe.send(Command.RUN_TILES, run_tiles_args(item.a_base, item.b_base, item.b_step, item.k,
                                                            item.n_tiles),
                          item.n_tiles * result_bytes(cfg), out.place)
                self.counters["runs"] += item.n_tiles
        pipe.flush()
        self._rounding = rounding
        self._lane_advances += len(plan.tiles) * cfg.rows

    def _next_seq(self):
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        return seq
