"""Command executor of the host link: decodes request frames and drives the GEMM engine (``docs/protocol.md``).

Golden model: :class:`fxtrain.sim.protocol.ProtocolEmulator` (the executor answers every byte sequence like it).

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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.engine import COUNTER_NAMES, addr_bits, b_addr_bits, engine_layouts
from ..sim.gemm import EngineConfig
from ..sim.payloads import (COUNTER, LINK_COUNTERS, ROUNDING_ARGS, RUN_ARGS, RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE,
                            RUN_TILES_ARGS, SEED, WRITE_HEADER, Identity, entry_bytes, max_tiles,
                            request_length_range, result_bytes, result_row_bytes, value_bytes)
from ..sim.wire import Command, Status
from ..sim.conv import EXPAND_ARGS
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

    Structure (``elaborate``): the registers in one namespace (``_registers``), the argument views and checks
    (``_arguments``), the storage (``_result_buffer``, ``link_memory.link_memory``, ``_response_payload``), the frame FSM
    in parts (``_receive_states``, ``_execute_state``, ``_run_states``, ``_tiles_check_state``,
    ``_respond_states``) and the ``_tile_walker`` that runs beside it during a RUN_TILES answer. With
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
        self._result_buffer(m, r)
        self._header_checks(m, r)
        self._arguments(m, r)
        r.lk = link_memory(m, self.identity)
        if self.config.expander:
            r.x = expand_setup(self, m, r)
        self._response_payload(m, r)
        m.d.comb += [self.tx_cmd.eq(r.cmd), self.tx_seq.eq(r.seq), self.tx_status.eq(r.status),
                     self.tx_length.eq(r.resp_len)]
        with m.FSM():
            self._receive_states(m, r)
            self._execute_state(m, r)
            self._run_states(m, r)
            self._tiles_check_state(m, r)
            self._respond_states(m, r)
            if self.config.expander:
                expand_state(self, m, r)
        self._tile_walker(m, r)
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

    def _respond_states(self, m, r):
        """``RESPOND`` starts the encoder; ``SENDING`` feeds it the payload (result rows: the result buffer, or in
        tile mode the engine, through the row register) until it is done, then acts on an OK SOFT_RESET."""
        cfg, eng = self.config, self.engine
        rrb = result_row_bytes(cfg)
        n_link = len(LINK_COUNTERS)
        # in RESPOND/SENDING the link memory reads the next payload byte and the result buffer, from registers only,
        # row res_row + 1 (tile mode: res_row, the row the walker staged); elsewhere both read address 0
        read_ahead = [r.pidx_next.eq(r.pidx), r.res_rd.eq(Mux(r.tiles, r.res_row, r.res_row + 1))]
        with m.State("RESPOND"):
            m.d.comb += [self.tx_start.eq(1)] + read_ahead
            m.d.sync += r.row_reg.eq(r.row_of(r.res_r.data))      # row 0, read in the cycle of respond()
            m.next = "SENDING"
        with m.State("SENDING"):
            # a link memory byte is valid once it was read for this pidx (not during an increment)
            payload_valid = Mux(r.source == 3, ~r.tiles | r.row_full, (r.source != 0) & r.rd_ok)
            m.d.comb += [self.tx_payload.valid.eq(payload_valid)] + read_ahead
            with m.If(self.tx_payload.ready & payload_valid):
                m.d.comb += r.pidx_next.eq(r.pidx + 1)
                with m.If(r.source == 3):
                    m.d.sync += [r.bidx.eq(r.bidx + 1), r.row_reg.eq(r.row_reg >> 8)]
                    with m.If(r.bidx == rrb - 1):
                        m.d.sync += r.bidx.eq(0)
                        with m.If(r.tiles):
                            m.d.sync += r.row_full.eq(0)
                        with m.Else():
                            # the read port shows row res_row + 1 (addressed last cycle, rows have >= 2 bytes)
                            m.d.sync += r.row_reg.eq(r.row_of(r.res_r.data))
                            m.d.comb += r.res_row_next.eq(r.res_row + 1)
            with m.If(~self.tx_busy):          # (after RUN_TILES' last byte the engine is idle)
                with m.If((r.cmd == Command.SOFT_RESET) & (r.status == Status.OK)):
                    m.d.comb += eng.counters_clear.eq(1)
                    m.d.sync += self.engine_reset.eq(1)     # a register: it fans out to the whole engine
                    m.d.sync += [r.shift.eq(0), r.mode.eq(0)]
                    m.d.sync += r.lk["zeroed"].eq((1 << n_link) - 1)
                m.d.sync += r.tiles.eq(0)
                m.next = "IDLE"

    def _tile_walker(self, m, r):
        """RUN_TILES after its OK answer started: offers the engine one clear+drain run per tile (B base
        ``b_cur``, advanced by ``b_step``) while ``t_left`` is not 0, and passes each drained row through the
        result buffer (written at ``res_row``, read back two cycles later) into the row register once that is
        empty, so the last tile stays in the buffer (READ_RESULT repeats it) and the row register keeps its two
        sources. The engine's two result banks, the staged row and the row register are the buffer between the
        engine and the link: the engine computes the next tile while a tile is sent and waits (``stall_out``) when
        both banks are full; the encoder waits for the row register, so no byte is lost or invented."""
        eng = self.engine
        with m.If(r.tiles & (r.t_left != 0)):
            m.d.comb += eng.run.valid.eq(1)
            with m.If(eng.run.ready):
                m.d.sync += [r.t_left.eq(r.t_next), r.b_cur.eq(r.b_next)]
        m.d.sync += r.staged_read.eq(r.staged)
        with m.If(r.tiles & ~r.staged):
            m.d.comb += eng.result.ready.eq(1)
            with m.If(eng.result.valid):
                m.d.comb += r.res_w.en.eq(1)
                m.d.sync += r.staged.eq(1)
        with m.If(r.tiles & r.staged & r.staged_read & ~r.row_full):
            m.d.sync += [r.row_reg.eq(r.row_of(r.res_r.data)), r.row_full.eq(1), r.staged.eq(0),
                         r.staged_read.eq(0)]
            m.d.comb += r.res_row_next.eq(Mux(r.res_row == self.config.rows - 1, 0, r.res_row + 1))

    def _result_buffer(self, m, r):
        """The result buffer: one drained tile in block RAM, row r = cols values then cols saturation flags;
        written as the engine's result rows arrive at ``res_row``; read synchronously at ``res_rd``: row 0
        outside RESPOND/SENDING (the row register's first load, in RESPOND), ``res_row + 1`` in them (tile mode:
        ``res_row``, the row the walker staged), from registers only (no decision of the cycle reaches the port).
        Row ``rows`` is a spare that the read-ahead reaches after the last row (never sent)."""
        cfg, eng = self.config, self.engine
        rows, cols, wl = cfg.rows, cfg.cols, cfg.wl
        res_mem = memory.Memory(shape=unsigned(cols * wl + cols), depth=rows + 1, init=[],
                                attrs={"ram_style": "block"})
        m.submodules.result_buffer = res_mem
        r.res_w = res_mem.write_port()
        r.res_r = res_mem.read_port()             # synchronous (block RAM)
        r.res_row = Signal(range(rows + 1))
        r.res_row_next = Signal.like(r.res_row)
        r.res_rd = Signal(range(rows + 2))
        m.d.comb += [r.res_row_next.eq(r.res_row), r.res_rd.eq(0), r.res_r.addr.eq(r.res_rd)]
        m.d.sync += r.res_row.eq(r.res_row_next)
        m.d.comb += [r.res_w.addr.eq(r.res_row),
                     r.res_w.data.eq(Cat(eng.result.payload.data.as_value(), eng.result.payload.sat))]

    def _header_checks(self, m, r):
        """``known`` (CMD is a command) and ``len_ok`` (LEN in its range), from the decoder's header."""
        cfg = self.config
        r.known = Signal()
        r.len_ok = Signal()
        with m.Switch(self.cmd):
            for c in Command:
                limits = request_length_range(cfg, c)
                if limits is None:
                    continue               # a command this device does not have (EXPAND without an expander)
                lo, hi = limits
                with m.Case(c):
                    m.d.comb += [r.known.eq(1), r.len_ok.eq((self.length >= lo) & (self.length <= hi))]

    def _arguments(self, m, r):
        """Views of the received arguments through the ``sim.payloads`` layouts, their checks, and the engine's
        write/run/seed payloads driven from them (a run's from RUN's arguments, or in tile mode from RUN_TILES'
        with the walker's B base)."""
        cfg, eng = self.config, self.engine
        rows, cols, wl = cfg.rows, cfg.cols, cfg.wl
        vb = value_bytes(cfg)
        aw, bw = addr_bits(cfg), b_addr_bits(cfg)
        sh = r.sh
        sh_bytes = len(sh) // 8
        # a memory of 2**n entries (A: n = aw, B: n = bw): a base below it has no bits above n - 1 and a count up
        # to it none above n: the sums are checked in n + 2 bits
        r.is_a = is_a = r.cmd == Command.WRITE_A
        r.e_len = Mux(is_a, entry_bytes(cfg, "A"), entry_bytes(cfg, "B"))
        w_args = data.View(WRITE_HEADER.as_struct(), r.wargs)
        w_addr, w_count = w_args.addr, w_args.count
        r.w_len_ok = (w_count != 0) & (r.length == WRITE_HEADER.size + Mux(
            is_a, w_count * entry_bytes(cfg, "A"), w_count * entry_bytes(cfg, "B")))

        def fits(base, count, n):               # base + count <= 2**n (the A memory: n = aw, B: n = bw)
            return (base[n:] == 0) & (count[n + 1:] == 0) & (base[:n] + count[:n + 1] <= (1 << n))

        r.fits = fits
        r.w_addr_ok = Mux(is_a, fits(w_addr, w_count, aw), fits(w_addr, w_count, bw))
        # w_ok: the WRITE's LEN/COUNT/ADDR checks, registered: the arguments are complete at least one cycle
        # before the first WRITE_ENTRY (an entry is at least one byte after them), and the register keeps the
        # length multiply and the address adders off the path into the engine's write valid (the iCE40 SPRAM's
        # address multiplexer, rtl/operand_memory.py; it was the critical path at 17.2 MHz)
        r.w_ok = Signal()
        m.d.sync += r.w_ok.eq(r.w_len_ok & r.w_addr_ok)
        run_args = data.View(RUN_ARGS.as_struct(), sh[-8 * RUN_ARGS.size:])
        r_a, r.r_b, r_k, r.r_flags = run_args.a_base, run_args.b_base, run_args.k, run_args.flags
        r_b = r.r_b
        # run_ok and tiles_ok are registers: sh and wargs last change with a DATA event and EXECUTE comes at least
        # two cycles later (the END event is taken at least one cycle after it), so they are settled there, and
        # the argument checks' carry chains end at flip-flops
        r.run_ok = Signal()
        m.d.sync += r.run_ok.eq((r_k != 0) & fits(r_a, r_k, aw) & fits(r_b, r_k, bw)
                                & self._flags_ok(r.r_flags, run_args.slot))
        head = RUN_TILES_ARGS.size - RUN_ARGS.size          # B_STEP: the first payload bytes, kept in wargs
        r.rt = rt = data.View(RUN_TILES_ARGS.as_struct(), Cat(r.wargs[:8 * head], sh[-8 * RUN_ARGS.size:]))
        # RUN_TILES' last 9 bytes are RUN's fields (sim.payloads): A_BASE, B_BASE, K (RUN's K low half) and FLAGS
        # reach the engine through RUN's view; the B ranges are checked by TILES_CHECK
        step_ok = (rt.b_step[bw + 1:] == 0) & (rt.b_step[:bw + 1] <= (1 << bw))
        # (b_cur keeps bw + 1 bits: B_BASE's upper bits are checked here)
        r.tiles_ok = Signal()
        m.d.sync += r.tiles_ok.eq((rt.n_tiles != 0) & (rt.n_tiles <= max_tiles(cfg)) & (rt.k != 0)
                                  & fits(rt.a_base, rt.k, aw) & (rt.b_base[bw:] == 0) & step_ok
                                  & (rt.flags == (RUN_CLEAR | RUN_DRAIN)))
        r.b_next, r.t_next = Signal.like(r.b_cur), Signal.like(r.t_left)
        m.d.comb += [r.b_next.eq(r.b_cur + rt.b_step[:bw + 1]), r.t_next.eq(r.t_left - 1)]
        r.b_base_fits, r.b_next_fits = fits(rt.b_base, rt.k, bw), fits(r.b_next, rt.k, bw)  # TILES_CHECK's b_fits
        # LEN of the answer, n_tiles * result_bytes, by shifts and adds (no multiplier: they are all the array's)
        rb = result_bytes(cfg)
        r.tiles_len = sum(rt.n_tiles << i for i in range(rb.bit_length()) if rb >> i & 1)[:16]
        rounding_args = data.View(ROUNDING_ARGS.as_struct(), sh[-8 * ROUNDING_ARGS.size:])
        r.r_shift, r.r_mode = rounding_args.shift, rounding_args.mode

        def values_of(n):
            return Cat(*[sh[8 * sh_bytes - 8 * vb * n + 8 * vb * i:][:wl] for i in range(n)])

        m.d.comb += [
            eng.a_write.payload.addr.eq((w_addr + r.widx)[:aw]),
            eng.a_write.payload.data.eq(values_of(rows)),
            eng.b_write.payload.addr.eq((w_addr + r.widx)[:bw]),
            eng.b_write.payload.data.eq(values_of(cols)),
            eng.run.payload.a_base.eq(r_a[:aw]),
            eng.run.payload.b_base.eq(r.b_cur[:bw]),
            eng.run.payload.k.eq(r_k[:aw + 1]),
            eng.run.payload.clear.eq((r.r_flags & RUN_CLEAR) != 0),
            eng.run.payload.drain.eq((r.r_flags & RUN_DRAIN) != 0),
            *([eng.run.payload.load.eq((r.r_flags & RUN_LOAD) != 0), eng.run.payload.save.eq((r.r_flags & RUN_SAVE) != 0),
               eng.run.payload.slot.eq(run_args.slot)] if cfg.psum_slots else []),
            eng.seed_lane.eq(r.lane),
            eng.seed.eq(sh[-8 * SEED.size:]),
        ]

    def _flags_ok(self, flags, slot):
        """:func:`fxtrain.sim.payloads.run_flags_ok` in gates: the four flag bits only, LOAD not with CLEAR, SAVE
        not with DRAIN, a LOAD or SAVE run's slot below ``psum_slots`` (without slots: CLEAR and DRAIN only)."""
        if not self.config.psum_slots:
            return flags <= (RUN_CLEAR | RUN_DRAIN)
        load, save = (flags & RUN_LOAD) != 0, (flags & RUN_SAVE) != 0
        return ((flags <= (RUN_CLEAR | RUN_DRAIN | RUN_LOAD | RUN_SAVE)) & ~(load & ((flags & RUN_CLEAR) != 0))
                & ~(save & ((flags & RUN_DRAIN) != 0)) & (~(load | save) | (slot < self.config.psum_slots)))

    def _response_payload(self, m, r):
        """The response payload byte: IDENTIFY ROM, counters (link memory, then the engine's) or result rows (the
        low byte of the row register); drives the link memory's read address. Sets ``r.rd_ok`` (the link byte at
        ``pidx`` is valid) and ``r.row_of`` (a result buffer row as its payload bytes)."""
        cfg, eng, lk = self.config, self.engine, r.lk
        cols, wl = cfg.cols, cfg.wl
        vb = value_bytes(cfg)
        n_link = len(LINK_COUNTERS)
        lk_r, zeroed, inc_idx, inc_step = lk["lk_r"], lk["zeroed"], lk["inc_idx"], lk["inc_step"]
        inc_busy, id_base, rd_zero = lk["inc_busy"], lk["id_base"], lk["rd_zero"]
        r.pidx = pidx = Signal(range(max(len(lk["ident_bytes"]), 4 * (n_link + len(COUNTER_NAMES))) + 1))
        r.pidx_next = pidx_next = Signal.like(pidx)   # 0 outside RESPOND/SENDING (so no command decision
        m.d.comb += pidx_next.eq(0)                    # reaches the link memory's read address)
        m.d.sync += pidx.eq(pidx_next)
        eng_vec = Cat(*[eng.counters[n] for n in COUNTER_NAMES])

        def row_of(row):
            return Cat(*[row[wl * j:wl * (j + 1)].as_signed().as_unsigned() if vb * 8 == wl else
                         Cat(row[wl * j:wl * (j + 1)], *([row[wl * (j + 1) - 1]] * (vb * 8 - wl)))
                         for j in range(cols)],
                       row[cols * wl:], Const(0, 8 * ((cols + 7) // 8) - cols))

        r.row_of = row_of
        r.rd_ok = rd_ok = Signal()     # the link memory read last cycle was the payload byte at pidx
        # link memory read address: the increment's while it runs, else the payload byte after this cycle
        with m.If(inc_busy):
            m.d.comb += lk_r.addr.eq(inc_idx * 4 + inc_step[:2])
        with m.Elif(r.source == 1):
            m.d.comb += lk_r.addr.eq(id_base + pidx_next)
        with m.Else():
            m.d.comb += lk_r.addr.eq(pidx_next)
        m.d.sync += [rd_ok.eq(~inc_busy),
                     rd_zero.eq(zeroed.bit_select(Mux(inc_busy, inc_idx, pidx_next[2:]), 1) & (r.source != 1))]
        link_byte = Mux(rd_zero, 0, lk_r.data)
        with m.Switch(r.source):
            with m.Case(1):
                m.d.comb += self.tx_payload.payload.eq(lk_r.data)
            with m.Case(2):
                m.d.comb += self.tx_payload.payload.eq(
                    Mux(pidx < 4 * n_link, link_byte, eng_vec.word_select((pidx - 4 * n_link)[:len(pidx)], 8)))
            with m.Case(3):
                m.d.comb += self.tx_payload.payload.eq(r.row_reg[:8])
