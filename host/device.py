"""Host driver of an fxtrain accelerator: the GEMM backend for a board, the RTL in simulation, or the emulator.

:class:`Device` implements :class:`fxtrain.host.backend.Backend` (the registry's ``sim:…``, ``serial:…`` and
``device:…`` specs open one) and speaks ``docs/protocol.md`` over a transport (:mod:`.transport`).

GEMMs of any shape are tiled by the one GEMM planner, :mod:`fxtrain.sim.planner` (padding, tiles ``tm`` outer /
``tn`` inner, K chunks of ``depth`` with clear/drain flags, RUN_TILES groups when K fits one chunk, operand
residency with LRU eviction and content digests), which ``fxtrain.sim.engine.gemm_via_engine`` plays on the golden model, so results equal
``fxtrain.sim.gemm.tiled_gemm`` bit for bit. A B chunk stays resident across ``gemm`` calls when the caller names
B's contents with ``b_key`` (e.g. a layer's weights at one optimiser step); a stale ``b_key`` can cost time but
never a wrong result.

Pipelining (``docs/protocol.md`` §2.2, §5.1). When the device reports a receive buffer and the driver manages the
lanes (after ``seed``/``reset``), ``gemm`` sends the planner's whole schedule without waiting, within the buffer
(:mod:`.pipeline`), and waits once at the end. The planner records residency as it plans; a GEMM whose answers all
arrived OK and in order proves every frame arrived intact. At the first missing, corrupted, out-of-order or
not-OK answer the driver forgets all beliefs (below) and finishes the GEMM from the first tile whose result it has
not received with the one-request-at-a-time path of the recovery rules below.

Recovery (``docs/protocol.md`` §5.2). The driver's beliefs about the device (which operand chunks are resident, the
rounding registers, the lanes' position) are recorded only after the device acknowledged the command that
established them, and all of them are dropped whenever an attempt fails (no answer, a corrupted answer, an error
status) or the link is resynchronised: a mangled frame may have written operand entries or lanes anywhere before its
CRC was checked (the rounding registers change only through a CRC-checked SET_ROUNDING, so only a failed
SET_ROUNDING or SOFT_RESET drops that belief). Everything a RUN depends on is confirmed again, and re-sent where
needed, right before it is sent; a RUN the device did not execute is re-sent that way, a RUN that may have executed
restarts its tile from the CLEAR run, and a RUN_TILES without a valid answer is redone whole (its tiles are
placed only from an intact answer). The lanes are kept at the golden model's position (seeds advanced by ``rows``
per acknowledged drain, re-loaded with SET_SEEDS after any failure), and a ``gemm`` that raises leaves them where
they were before it. So every ``gemm`` either equals the golden model bit for bit or raises :class:`DeviceError` (up
to CRC-16 collisions of corrupted frames).

Members
-------
DeviceError, DeviceTimeout, DeviceMismatch
    Errors; messages name the command and the reason.
ResidentMemory
    Re-exported from :mod:`fxtrain.sim.residency`.
Device
    The driver.
open_device
    A :class:`Device` from a device spec string: ``emu``, ``sim:verilator`` (free-running harness),
    ``sim:verilator-cocotb``, ``sim:icarus``, ``serial:PORT@BAUD`` (unseeded;
    :func:`fxtrain.host.backend.open_backend` opens and seeds one from a backend spec).
"""

from __future__ import annotations

import time

import numpy as np

from ..sim.engine import RESET_LANE_STATE
from ..sim.gemm import EngineConfig, GemmResult, check_gemm
from ..sim.lfsr import lane_advance, lane_seeds
from ..sim.payloads import (COUNTER, MAGIC, PROTOCOL_VERSION, ROUNDING_ARGS, RUN_DRAIN, SEED, run_args,
                            WRITE_HEADER, Identity, counter_names, decode_result, decode_tiles, pack_values,
                            result_bytes, run_tiles_args, value_bytes, write_frames)
from ..sim.gemm_plan import plan_gemm
from ..sim.planner import CommandPlanner
from ..sim.residency import ResidentMemory, content_digest
from ..sim.schedule_items import ReadResult, Reused, Run, RunTiles, SetRounding, WriteOperand
from ..sim.wire import Command, ResponseParser, Status, encode_request
from .conv_offload import CONV_COUNTERS, send_conv_item, with_digest
from .pipeline import LinkFault, Pipeline
from .psum_driver import chunk_outer

__all__ = ["DeviceError", "DeviceTimeout", "DeviceMismatch", "ResidentMemory", "Device", "open_device", "IDEMPOTENT",
           "NOT_EXECUTED"]


class DeviceError(RuntimeError):
    pass


class DeviceTimeout(DeviceError):
    pass


class DeviceMismatch(DeviceError):
    pass


class _NotExecuted(DeviceError):
    """One attempt failed and the device reported that it did not execute the request."""


class _Unanswered(DeviceError):
    """One attempt got no valid answer: the device may or may not have executed the request."""


#: Commands the driver may re-send after a lost or corrupted response. Any command (RUN included) is re-sent
#: when the device answered a status of :data:`NOT_EXECUTED`; SOFT_RESET is never re-sent.
IDEMPOTENT = frozenset({Command.IDENTIFY, Command.WRITE_A, Command.WRITE_B, Command.SET_ROUNDING,
                        Command.SET_SEEDS, Command.READ_RESULT, Command.READ_COUNTERS, Command.EXPAND})


#: Statuses that mean the request frame was mangled on the way and not executed (the host only sends well-formed
#: frames). An answer with one of them is accepted whatever its CMD/SEQ echo (those may be the mangled bytes).
NOT_EXECUTED = frozenset({Status.CRC_ERROR, Status.TIMEOUT, Status.UNKNOWN_COMMAND, Status.BAD_LENGTH})




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

        Raises :class:`_NotExecuted` (the device said the frame was mangled), :class:`_Unanswered` (no answer, or
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
            raise _Unanswered(f"no answer within {self.timeout} s" if response is None
                              else "the response failed its CRC")
        if response.status in NOT_EXECUTED and cmd is not Command.SOFT_RESET:
            self._forget()
            raise _NotExecuted(f"the device answered {Status(response.status).name}")
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
            except (_NotExecuted, _Unanswered) as error:
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

    def _write_entries(self, cmd, addr, entries):
        """Write ``entries`` at ``addr``; True if no attempt failed after the first frame's acknowledgement (so
        every entry holds what the acknowledged frames wrote)."""
        vb = value_bytes(self.config)
        which = "A" if cmd == Command.WRITE_A else "B"
        epoch = None
        for start, count in write_frames(self.config, which, len(entries), self.identity.rx_buffer):
            payload = WRITE_HEADER.pack(addr + start, count) + pack_values(entries[start:start + count], vb)
            self._exchange(cmd, payload, expect_len=0)
            epoch = self._epoch if epoch is None else epoch
        return epoch == self._epoch

    def _resident(self, mem, cmd, key, block, sent_counter, reused_counter=None):
        """Address of ``block`` in ``mem``, written first unless it is resident; recorded only once written."""
        digest = content_digest(block)
        if not self.residency:
            mem.clear()
        addr = mem.lookup(key, digest)
        if addr is not None:
            if reused_counter:
                self.counters[reused_counter] += len(block)
            return addr
        for _ in range(1 + self.retries):
            addr = mem.reserve(key, len(block))
            intact = self._write_entries(cmd, addr, block)
            self.counters[sent_counter] += len(block)
            if intact:
                mem.commit(key, digest, addr, len(block))
                return addr
        raise DeviceError(f"{cmd.name} of {len(block)} entries on {self.transport.name}: a link error hit every "
                          f"one of {1 + self.retries} attempts")

    def _run(self, shift, mode, a_key, a_block, b_key, b_block, flags, slot=0):
        """One RUN (partial-sum ``slot``) whose operands, rounding registers and lanes are confirmed right before
        it is sent.

        Re-sent (after confirming everything again) while the device reports it did not execute it; raises
        :class:`_Unanswered` when it may have executed (the caller restarts the tile)."""
        why = None
        for attempt in range(1 + self.retries):
            if attempt:
                self.counters["retries"] += 1
                if why is not None:
                    self._resync()
            addrs = self._confirm(shift, mode, a_key, a_block, b_key, b_block, rounding=bool(flags & RUN_DRAIN))
            if addrs is None:
                why = None               # a link error after something was confirmed: confirm everything again
                continue
            a_addr, b_addr = addrs
            try:
                self._attempt(Command.RUN, run_args(a_addr, b_addr, len(a_block), flags, slot), 0)
            except _NotExecuted as error:
                why = error
                continue
            self.counters["runs"] += 1
            if flags & RUN_DRAIN:
                self._lane_advances += self.config.rows
            return
        raise DeviceError(f"RUN failed on {self.transport.name} after {attempt + 1} attempt(s): "
                          f"{why or 'a link error while confirming its operands every time'}")

    def _confirm(self, shift, mode, a_key, a_block, b_key, b_block, rounding):
        """Confirm what a RUN or RUN_TILES needs right before it is sent: lanes and rounding registers (when
        ``rounding``: the run drains), then the A and B blocks (resident or written). Returns ``(a_addr, b_addr)``,
        or None when a link error happened on the way (the device's state is then unknown again)."""
        epoch = self._epoch
        if rounding:
            self._sync_lanes()
            self._sync_rounding(shift, mode)
        a_addr = self._resident(self._a_mem, Command.WRITE_A, a_key, a_block, "a_entries_sent")
        b_addr = self._resident(self._b_mem, Command.WRITE_B, b_key, b_block, "b_entries_sent", "b_entries_reused")
        return None if self._epoch != epoch else (a_addr, b_addr)

    def _tile(self, shift, mode, runs):
        """The runs of one output tile, then its READ_RESULT; restarted from its first (CLEAR) run when a RUN
        went unanswered. Returns ``(c, saturated)`` of the tile."""
        cfg = self.config
        result_len = result_bytes(cfg)
        for attempt in range(1 + self.retries):
            if attempt:
                self.counters["retries"] += 1
                self._resync()
            try:
                for run in runs:
                    self._run(shift, mode, *run)
            except _Unanswered as error:
                why = error
                continue
            return decode_result(cfg, self._exchange(Command.READ_RESULT, expect_len=result_len))
        raise DeviceError(f"RUN failed on {self.transport.name}: unanswered in each of {attempt + 1} attempts "
                          f"at its tile ({why})")

    def _tile_group(self, shift, mode, a_key, a_block, b_key, b_block, n_tiles):
        """One RUN_TILES whose operands, rounding registers and lanes are confirmed right before it is sent;
        redone whole (after confirming everything again) when it failed in any way. Returns its ``n_tiles``
        tiles ``[(c, saturated), ...]``."""
        why = None
        k = len(a_block)
        for attempt in range(1 + self.retries):
            if attempt:
                self.counters["retries"] += 1
                if why is not None:
                    self._resync()
            addrs = self._confirm(shift, mode, a_key, a_block, b_key, b_block, rounding=True)
            if addrs is None:
                why = None               # a link error after something was confirmed: confirm everything again
                continue
            a_addr, b_addr = addrs
            try:
                payload = self._attempt(Command.RUN_TILES, run_tiles_args(a_addr, b_addr, k, k, n_tiles),
                                        n_tiles * result_bytes(self.config))
            except (_NotExecuted, _Unanswered) as error:
                why = error
                continue
            self.counters["runs"] += n_tiles
            self._lane_advances += n_tiles * self.config.rows
            return decode_tiles(self.config, payload)
        raise DeviceError(f"RUN_TILES failed on {self.transport.name} after {attempt + 1} attempt(s): "
                          f"{why or 'a link error while confirming its operands every time'}")

    def _one_at_a_time(self, plan, out, shift, mode, b_scope):
        """The tiles not received yet, one exchange at a time (the recovery rules of the module docstring)."""
        if plan.groups is not None:
            (chunk,) = plan.chunks
            for group in plan.groups:
                if group.first < out.received:
                    continue
                tiles = self._tile_group(shift, mode, ("A", self._gemm_id, group.tm, 0),
                                         plan.a_block(out.ap, group.tm, chunk),
                                         b_scope + ("tiles", group.tn0, group.count),
                                         plan.b_block(out.bp, group.tn0, chunk, group.count), group.count)
                for tile in tiles:
                    out.place_tile(*tile)
            return
        if self.planner.uses_psum(plan):
            chunk_outer(self, plan, out, shift, mode, b_scope)
            return
        for tm, tn in plan.tiles[out.received:]:
            runs = [(("A", self._gemm_id, tm, chunk.k0), plan.a_block(out.ap, tm, chunk),
                     b_scope + (tn, chunk.k0), plan.b_block(out.bp, tn, chunk), plan.flags(chunk))
                    for chunk in plan.chunks]
            out.place_tile(*self._tile(shift, mode, runs))

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
        out = _Output(plan, *plan.pad(a, b))
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
            self._one_at_a_time(plan, out, shift, mode, b_scope)
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


class _Output:
    """The padded operands and the result of one GEMM; tiles arrive in the plan's order."""

    def __init__(self, plan, ap, bp):
        self.plan, self.ap, self.bp = plan, ap, bp
        self.c = np.zeros((plan.mp, plan.np_), dtype=np.int64)
        self.sat = np.zeros((plan.mp, plan.np_), dtype=bool)
        self.received = 0

    def block(self, which, index, chunk, count=1):
        if which == "A":
            return self.plan.a_block(self.ap, index, chunk)
        return self.plan.b_block(self.bp, index, chunk, count)

    def digest(self, which, index, chunk):
        return content_digest(self.block(which, index, chunk))

    def place_tile(self, c, sat):
        rs, cs = self.plan.tile_slices(*self.plan.tiles[self.received])
        self.c[rs, cs], self.sat[rs, cs] = c, sat
        self.received += 1

    def place(self, payload):
        """Place the tiles of a READ_RESULT (one) or RUN_TILES (several) payload."""
        for tile in decode_tiles(self.plan.config, payload):
            self.place_tile(*tile)


def _parse_config(config):
    if config is None:
        return EngineConfig()
    if not isinstance(config, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, not {config!r}")
    return config


def open_device(spec, *, config=None, expect=None, timeout=None, retries=3, **transport_options):
    """A :class:`Device` for ``spec``.

    ``emu`` (the protocol emulator over the engine model, ``config`` or the default ``EngineConfig``),
    ``sim:verilator`` (the SoC's RTL in the free-running Verilator harness; ``config`` defaults to
    ``EngineConfig()`` like ``emu``), ``sim:verilator-cocotb`` / ``sim:icarus`` (the same RTL behind the cocotb
    bridge; ``config`` defaults to a 2x2 engine of depth 32),
    ``serial:PORT@BAUD`` (a board; PORT may be a pyserial URL, BAUD defaults to 3000000).
    """
    from .transport import SIMULATION_BACKENDS, EmulatorTransport, SerialTransport, SimulationTransport

    if not isinstance(spec, str):
        raise TypeError(f"Device spec must be a string, not {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind == "emu" and rest == "":
        from ..sim.protocol import ProtocolEmulator
        transport = EmulatorTransport(ProtocolEmulator(_parse_config(config), **transport_options))
        default_timeout = 1.0
    elif kind == "sim" and rest in SIMULATION_BACKENDS:
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
        raise ValueError(f"Device spec must be 'emu', 'sim:verilator', 'sim:verilator-cocotb', 'sim:icarus' or "
                         f"'serial:PORT@BAUD', not {spec!r}")
    try:
        return Device(transport, expect=expect, timeout=default_timeout if timeout is None else timeout,
                      retries=retries)
    except BaseException:
        transport.close()
        raise

