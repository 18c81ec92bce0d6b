"""Command executor of the host link: decodes request frames and drives the GEMM engine (``docs/protocol.md``).

Golden model: :class:`fxtrain.sim.protocol.ProtocolEmulator` (the executor answers every byte sequence like it).

The request decoding (header and argument checks) is ``rtl/command_args.py``, the response path (result buffer,
payload, ``RESPOND``/``SENDING``, the RUN_TILES tile walker) ``rtl/command_response.py``, the EXPAND part
``rtl/expand_command.py`` and the link counters' storage ``rtl/link_memory.py``.

Members
-------
engine_signature
    The port signature of ``rtl.engine.GemmEngine`` as the executor sees it (from ``sim.engine.engine_layouts``).
CommandExecutor
    Consumes :class:`~.framing.FrameDecoder` events, executes commands, starts :class:`~.framing.FrameEncoder`
    responses and feeds their payload.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.engine import COUNTER_NAMES, addr_bits, b_addr_bits, engine_layouts
from ..sim.gemm import EngineConfig
from ..sim.payloads import (COUNTER, LINK_COUNTERS, ROUNDING_ARGS, RUN_ARGS, RUN_DRAIN, RUN_TILES_ARGS, SEED,
                            WRITE_HEADER, Identity, entry_bytes, max_tiles, result_bytes, result_row_bytes)
from ..sim.wire import Command, Status
from ..sim.conv import EXPAND_ARGS
from .command_args import arguments, header_checks
from .command_response import respond_states, response_payload, result_buffer, tile_walker
from .expand_command import expand_execute, expand_setup, expand_state, expand_wiring
from .framing import EventKind, event_layout
from .link_memory import link_memory

__all__ = ["engine_signature", "CommandExecutor"]


def engine_signature(config):
    """Signature of ``GemmEngine(config)`` (ports as documented in ``sim/engine.py``), engine's point of view."""
    lay = engine_layouts(config)
    return wiring.Signature({
        "a_write": In(stream.Signature(lay["a_write"])),
        "b_write": In(stream.Signature(lay["b_write"])),
        "run": In(stream.Signature(lay["run"])),
        "result": Out(stream.Signature(lay["result"])),
        "shift": In(range(33)),
        "mode": In(1),
        "seed_lane": In(range(config.cols)),
        "seed": In(32),
        "seed_load": In(1),
        "busy": Out(1),
        "error": Out(1),
        "counters": Out(lay["counters"]),
        "counters_clear": In(1),
        **({"b_read_en": In(1), "b_read_addr": In(b_addr_bits(config)),
            "b_read_data": Out(lay["b_write"]["data"].shape)} if config.expander else {}),
    })


class CommandExecutor(wiring.Component):
    """Executes request frames on the engine, one at a time, and answers each with exactly one response.

    Sequence per frame: on the ``HEADER`` event the command and LEN are checked (unknown command or LEN outside
    the command's range: the decoder is told to ``abort`` and the error is answered at once); payload bytes are
    then consumed as they arrive (WRITE_A/WRITE_B entries and SET_SEEDS lanes are written to the engine as soon
    as they are complete, other arguments are collected); on ``END`` the CRC or timeout is answered, or the
    command executes. RUN answers only when the engine is idle again and, for a draining run, when the drained
    tile has been copied into the executor's result buffer (so READ_RESULT can be repeated). RUN_TILES checks its
    B ranges one tile per cycle (``TILES_CHECK``), then starts its OK answer at once (LEN = ``n_tiles`` result
    payloads) while the *tile walker* runs the tiles on the engine and feeds each drained row to the encoder
    through the row register (the result buffer keeps the last tile). SOFT_RESET pulses
    ``engine_reset`` after its response has been sent and zeroes the link counters and the rounding registers.

    Storage (sized for the iCE40UP5K, where flip-flops cost logic cells): the link counters (``LINK_COUNTERS``
    order, u32, wrapping) and the IDENTIFY payload share one byte-wide block RAM, the *link memory* (counter
    ``i`` at bytes ``4i .. 4i+3``, little-endian; the IDENTIFY ROM after them). A counter is incremented by a
    byte-serial read-modify-write started with the response (5 cycles: byte ``b`` + carry written in cycle
    ``b + 1``; the carry into byte ``b + 1`` is ``carry & (byte == 0xFF)``), i.e. exact 32-bit wrapping
    arithmetic; it finishes before the response's first payload byte is due (the encoder sends 6 header bytes
    first) and payload bytes from the link memory wait for it in any case. SOFT_RESET sets a per-counter
    *zeroed* flag (a zeroed counter reads as 0 and its next increment writes 1) instead of writing 24 bytes.
    The result buffer is a block RAM (one spare row) whose read port runs one row ahead of the row being sent:
    its output goes only into the *row register*, a byte shift register loaded with row 0 in ``RESPOND`` and with
    the next row when the last byte of a row is sent, whose low byte is the payload byte (so the block RAM's
    clock-to-out never meets the response logic; no cycle is added). During a RUN_TILES answer the row register
    is loaded from the engine's result stream instead (the tile walker). RUN's and
    SET_ROUNDING's arguments are read from a shift register that every payload byte enters (it also holds the
    current WRITE entry and SET_SEEDS seed); only WRITE's ADDR and COUNT are kept apart.

    Latency (byte-stream SoC, ``tests/test_protocol.py::test_rtl_response_latency``): one request byte per
    cycle, except one stall cycle after each complete operand entry (its memory write) or seed. The first response byte leaves the SoC 5 cycles after the last request byte (the second CRC byte)
    was taken, for commands without engine work (e.g. IDENTIFY), and 4 cycles after the LEN byte for a frame
    rejected at its header; RUN adds the engine's ``run_cycles`` and, when draining, ``rows`` result transfers;
    RUN_TILES adds ``n_tiles`` checking cycles before its header, and its payload bytes follow as tiles drain
    (at most one row every ``result_row_bytes + 1`` cycles: the row register is refilled the cycle after
    its last byte left). Other response bytes follow at one per cycle while the output is ready.

    Structure (``elaborate``): the registers in one namespace (``_registers``), the header and argument views and
    checks (``rtl/command_args.py``: ``header_checks``, ``arguments``), the storage (``rtl/command_response.py``:
    ``result_buffer``, ``response_payload``; ``link_memory.link_memory``), the frame FSM in parts
    (``_receive_states``, ``_execute_state``, ``_run_states``, ``_tiles_check_state`` here, ``respond_states`` in
    ``rtl/command_response.py``) and the ``tile_walker`` (``rtl/command_response.py``) that runs beside it during a
    RUN_TILES answer. With
    ``config.expander`` the EXPAND part (``rtl/expand_command.py``: argument check, the ``EXPAND`` state of
    ``sim.conv.expand_cycles`` cycles, the walker ``rtl/expander.py``) is added; the payload shift register then
    holds EXPAND's 63 argument bytes. Without it EXPAND is an unknown command and none of it exists.

    Parameters
    ----------
    config : EngineConfig
    identity : fxtrain.sim.protocol.Identity
        The IDENTIFY payload (a ROM).

    Members
    -------
    events : In(stream.Signature(event_layout))
    cmd, seq : In(8)
    length : In(16)
    abort : Out(1)
        From the decoder.
    tx_start, tx_cmd, tx_seq, tx_status, tx_length, tx_payload, tx_busy
        To the encoder.
    engine : In(engine_signature(config))
        Connect to ``GemmEngine`` with ``wiring.connect``.
    engine_reset : Out(1)
        One-cycle pulse from a register, in the cycle after the SOFT_RESET response has been sent (the executor
        is then back in IDLE; no engine port is used before the next frame's payload or END event).
    """

    def __init__(self, config, identity):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        if not isinstance(identity, Identity):
            raise TypeError(f"identity must be an Identity, not {identity!r}")
        self.config = config
        self.identity = identity
        super().__init__({
            "events": In(stream.Signature(event_layout)),
            "cmd": In(8), "seq": In(8), "length": In(16), "abort": Out(1),
            "tx_start": Out(1), "tx_cmd": Out(8), "tx_seq": Out(8), "tx_status": Out(8), "tx_length": Out(16),
            "tx_payload": Out(stream.Signature(8)), "tx_busy": In(1),
            "engine": In(engine_signature(config)),
            "engine_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        r = self._registers(m)
        result_buffer(self, m, r)
        header_checks(self, m, r)
        arguments(self, m, r)
        r.lk = link_memory(m, self.identity)
        if self.config.expander:
            r.x = expand_setup(self, m, r)
        response_payload(self, m, r)
        m.d.comb += [self.tx_cmd.eq(r.cmd), self.tx_seq.eq(r.seq), self.tx_status.eq(r.status),
                     self.tx_length.eq(r.resp_len)]
        with m.FSM():
            self._receive_states(m, r)
            self._execute_state(m, r)
            self._run_states(m, r)
            self._tiles_check_state(m, r)
            respond_states(self, m, r)
            if self.config.expander:
                expand_state(self, m, r)
        tile_walker(self, m, r)
        if self.config.expander:
            expand_wiring(self, m, r)
        return m

    # -- the parts of elaborate: every register in one namespace, then the states --

    def _registers(self, m):
        """The executor's registers (a namespace ``r`` the other parts share) and the ``count``/``respond``
        actions."""
        cfg = self.config
        r = SimpleNamespace()
        r.cmd, r.seq, r.length, r.status, r.resp_len = Signal(8), Signal(8), Signal(16), Signal(8), Signal(16)
        r.nin = Signal(range(RUN_ARGS.size + 1))     # payload bytes consumed, saturating at RUN_ARGS.size
        r.wargs = Signal(8 * WRITE_HEADER.size)      # the first payload bytes (WRITE_A/B: ADDR, COUNT)
        r.e_max = max(entry_bytes(cfg, "A"), entry_bytes(cfg, "B"))
        # every payload byte shifts in at the top: the last entry (WRITE_A/B), seed (SET_SEEDS), or the whole
        # payload of SET_ROUNDING and RUN (sim.payloads layouts), the last byte received at the top; RUN_TILES'
        # first bytes (B_STEP) are kept in wargs, its last ones (RUN's fields) here
        head = RUN_TILES_ARGS.size - RUN_ARGS.size
        if head > WRITE_HEADER.size or any(RUN_TILES_ARGS.offset(f) != head + RUN_ARGS.offset(f)
                                           for f in ("a_base", "b_base", "k", "flags")):
            raise ValueError("RUN_TILES_ARGS must end with RUN_ARGS' fields after at most 4 bytes (sim.payloads)")
        sh_bytes = max(r.e_max, RUN_ARGS.size, ROUNDING_ARGS.size, SEED.size,
                       EXPAND_ARGS.size if cfg.expander else 0)     # (EXPAND's: rtl/expand_command.py)
        r.sh = Signal(8 * sh_bytes)
        r.ecnt = Signal(range(r.e_max + 1))
        # entries written (only the address bits of the deeper memory are needed)
        r.widx = Signal(max(1, addr_bits(cfg), b_addr_bits(cfg)))
        r.scnt = Signal(range(SEED.size))
        r.lane = Signal(range(cfg.cols + 1))
        r.zero_seed = Signal()
        r.shift, r.mode = Signal(range(33)), Signal()
        r.got_last, r.drain = Signal(), Signal()
        # RUN_TILES: tile mode, tiles left to issue (and, while checking, B ranges left to check), the B base of
        # the next tile (b_fits: its B range fits, computed a cycle ahead), whether the row register is full
        r.tiles, r.b_fits = Signal(), Signal()
        r.t_left = Signal(range(max_tiles(cfg) + 1))
        # the engine's B base (RUN: B_BASE; RUN_TILES: B_BASE + t * B_STEP < 2 * b_depth, as B_STEP <= b_depth)
        r.b_cur = Signal(b_addr_bits(cfg) + 1)
        r.row_full = Signal()
        r.staged = Signal()          # a drained row was written to the result buffer at res_row, not yet loaded
        r.staged_read = Signal()     # ... and the read port has read it (staged for a cycle already)
        # the row register: the result row being sent, low byte first
        r.row_reg = Signal(8 * result_row_bytes(cfg))
        # response: payload index, result row byte, payload source (0 none, 1 identity, 2 counters, 3 result)
        r.bidx = Signal(range(result_row_bytes(cfg) + 1))
        r.source = Signal(2)
        m.d.comb += [self.engine.shift.eq(r.shift), self.engine.mode.eq(r.mode)]
        m.d.sync += self.engine_reset.eq(0)

        def count(name):
            m.d.comb += [r.lk["inc_go"].eq(1), r.lk["inc_sel"].eq(LINK_COUNTERS.index(name))]

        def respond(st, n=0, src=0):
            m.d.sync += [r.status.eq(st), r.resp_len.eq(n), r.source.eq(src), r.bidx.eq(0)]
            m.d.comb += [r.pidx_next.eq(0), r.res_row_next.eq(0)]
            m.next = "RESPOND"

        r.count, r.respond = count, respond
        return r

    def _receive_states(self, m, r):
        """``IDLE`` (header checks), ``RECEIVE`` (payload bytes and the frame's end), ``WRITE_ENTRY`` and
        ``LOAD_SEED`` (one stall cycle after each complete operand entry or seed)."""
        eng, ev = self.engine, self.events.payload
        count, respond = r.count, r.respond
        with m.State("IDLE"):
            m.d.comb += self.events.ready.eq(1)
            with m.If(self.events.valid):
                m.d.sync += [r.cmd.eq(self.cmd), r.seq.eq(self.seq), r.length.eq(self.length), r.nin.eq(0),
                             r.ecnt.eq(0), r.widx.eq(0), r.scnt.eq(0), r.lane.eq(0), r.zero_seed.eq(0),
                             r.wargs.eq(0), r.tiles.eq(0)]
                with m.If(ev.kind == EventKind.END):       # timeout before the header was complete
                    count("timeouts")
                    respond(Status.TIMEOUT)
                with m.Elif(~r.known):
                    m.d.comb += self.abort.eq(1)
                    count("unknown_commands")
                    respond(Status.UNKNOWN_COMMAND)
                with m.Elif(~r.len_ok):
                    m.d.comb += self.abort.eq(1)
                    count("bad_lengths")
                    respond(Status.BAD_LENGTH)
                with m.Else():
                    m.next = "RECEIVE"
        with m.State("RECEIVE"):
            m.d.comb += self.events.ready.eq(1)
            with m.If(self.events.valid & (ev.kind == EventKind.DATA)):
                m.d.sync += r.sh.eq(Cat(r.sh[8:], ev.data))
                with m.If(r.nin != RUN_ARGS.size):
                    m.d.sync += r.nin.eq(r.nin + 1)
                with m.Switch(r.nin):
                    for i in range(WRITE_HEADER.size):
                        with m.Case(i):
                            m.d.sync += r.wargs[8 * i:8 * (i + 1)].eq(ev.data)
                with m.If((r.cmd == Command.WRITE_A) | (r.cmd == Command.WRITE_B)):
                    with m.If(r.nin >= WRITE_HEADER.size):
                        m.d.sync += r.ecnt.eq(r.ecnt + 1)
                        with m.If(r.ecnt == r.e_len - 1):
                            m.d.sync += r.ecnt.eq(0)
                            m.next = "WRITE_ENTRY"
                with m.If(r.cmd == Command.SET_SEEDS):
                    m.d.sync += r.scnt.eq(r.scnt + 1)
                    with m.If(r.scnt == SEED.size - 1):
                        m.next = "LOAD_SEED"
            with m.If(self.events.valid & (ev.kind == EventKind.END)):
                with m.If(ev.timeout):
                    count("timeouts")
                    respond(Status.TIMEOUT)
                with m.Elif(~ev.crc_ok):
                    count("crc_errors")
                    respond(Status.CRC_ERROR)
                with m.Else():
                    m.next = "EXECUTE"
        with m.State("WRITE_ENTRY"):
            w_ok = r.w_ok
            with m.If(w_ok):
                m.d.comb += [eng.a_write.valid.eq(r.is_a), eng.b_write.valid.eq(~r.is_a)]
            with m.If(~w_ok | Mux(r.is_a, eng.a_write.ready, eng.b_write.ready)):
                m.d.sync += r.widx.eq(r.widx + 1)
                m.next = "RECEIVE"
        with m.State("LOAD_SEED"):
            m.d.comb += eng.seed_load.eq(r.lane < self.config.cols)
            m.d.sync += [r.lane.eq(r.lane + 1), r.zero_seed.eq(r.zero_seed | (r.sh[-8 * SEED.size:] == 0))]
            m.next = "RECEIVE"

    def _execute_state(self, m, r):
        """``EXECUTE``: a frame whose CRC passed. Commands without engine work answer at once; RUN goes to
        ``RUN_ISSUE``, RUN_TILES with plausible arguments to ``TILES_CHECK``."""
        cfg = self.config
        count, respond = r.count, r.respond

        def checked(ok=None, src=0, n=0):      # answer OK, or BAD_ARGUMENT unless ``ok``
            if ok is None:
                count("frames_ok")
                respond(Status.OK, n, src)
                return
            with m.If(~ok):
                count("bad_arguments")
                respond(Status.BAD_ARGUMENT)
            with m.Else():
                count("frames_ok")
                respond(Status.OK, n, src)

        with m.State("EXECUTE"):
            with m.Switch(r.cmd):
                with m.Case(Command.IDENTIFY):
                    checked(None, 1, len(self.identity.to_bytes()))
                with m.Case(Command.WRITE_A, Command.WRITE_B):
                    with m.If(~r.w_len_ok):
                        count("bad_lengths")
                        respond(Status.BAD_LENGTH)
                    with m.Else():
                        checked(r.w_addr_ok)
                with m.Case(Command.SET_ROUNDING):
                    ok = (r.r_shift <= 32) & (r.r_mode <= 1)
                    with m.If(ok):
                        m.d.sync += [r.shift.eq(r.r_shift), r.mode.eq(r.r_mode[0])]
                    checked(ok)
                with m.Case(Command.SET_SEEDS):
                    checked(~r.zero_seed)
                with m.Case(Command.RUN):
                    with m.If(~r.run_ok):
                        count("bad_arguments")
                        respond(Status.BAD_ARGUMENT)
                    with m.Else():
                        m.d.sync += [r.got_last.eq(0), r.drain.eq((r.r_flags & RUN_DRAIN) != 0),
                                     r.b_cur.eq(r.r_b)]
                        m.d.comb += r.res_row_next.eq(0)
                        m.next = "RUN_ISSUE"
                with m.Case(Command.RUN_TILES):
                    with m.If(~r.tiles_ok):
                        count("bad_arguments")
                        respond(Status.BAD_ARGUMENT)
                    with m.Else():
                        # TILES_CHECK walks the n_tiles B ranges (t_left counts down the ones left to check)
                        m.d.sync += [r.b_cur.eq(r.rt.b_base), r.t_left.eq(r.rt.n_tiles), r.resp_len.eq(r.tiles_len),
                                     r.b_fits.eq(r.b_base_fits)]
                        m.next = "TILES_CHECK"
                if cfg.expander:
                    with m.Case(Command.EXPAND):
                        expand_execute(m, r)
                with m.Case(Command.READ_RESULT):
                    checked(None, 3, result_bytes(cfg))
                with m.Case(Command.READ_COUNTERS):
                    checked(None, 2, COUNTER.size * (len(LINK_COUNTERS) + len(COUNTER_NAMES)))
                with m.Case(Command.SOFT_RESET):
                    checked()

    def _run_states(self, m, r):
        """RUN: ``RUN_ISSUE`` offers the run to the engine; ``RUN_WAIT`` copies a drained tile into the result
        buffer and answers once the engine is idle."""
        eng = self.engine
        with m.State("RUN_ISSUE"):
            m.d.comb += eng.run.valid.eq(1)
            with m.If(eng.run.ready):
                m.next = "RUN_WAIT"
        with m.State("RUN_WAIT"):
            m.d.comb += eng.result.ready.eq(1)
            with m.If(eng.result.valid):
                m.d.comb += [r.res_w.en.eq(1), r.res_row_next.eq(r.res_row + 1)]
                with m.If(eng.result.payload.last):
                    m.d.sync += r.got_last.eq(1)
            with m.If(~eng.busy & (~r.drain | r.got_last)):
                r.count("frames_ok")
                r.respond(Status.OK)

    def _tiles_check_state(self, m, r):
        """``TILES_CHECK`` (RUN_TILES, one cycle per tile): tile ``t``'s B range ``b_cur = b_base + t * b_step``
        must fit (``sim.payloads.run_tiles_ok``; the register ``b_fits``, set with ``b_cur``); the OK answer then
        starts at once and the tile walker runs the tiles while it is sent, stepping ``b_cur`` and ``t_left``."""
        with m.State("TILES_CHECK"):
            with m.If(~r.b_fits):
                r.count("bad_arguments")
                r.respond(Status.BAD_ARGUMENT)
            with m.Elif(r.t_left == 1):
                r.count("frames_ok")
                r.respond(Status.OK, r.resp_len, 3)
                m.d.sync += [r.tiles.eq(1), r.b_cur.eq(r.rt.b_base), r.t_left.eq(r.rt.n_tiles),
                             r.row_full.eq(0), r.staged.eq(0)]
            with m.Else():
                m.d.sync += [r.b_cur.eq(r.b_next), r.t_left.eq(r.t_next), r.b_fits.eq(r.b_next_fits)]
