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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.engine import COUNTER_NAMES, addr_bits, b_addr_bits, engine_layouts
from ..sim.gemm import EngineConfig
from ..sim.payloads import (COUNTER, LINK_COUNTERS, ROUNDING_ARGS, RUN_ARGS, RUN_CLEAR, RUN_DRAIN, SEED,
                            WRITE_HEADER, Identity, entry_bytes, request_length_range, result_bytes,
                            result_row_bytes, value_bytes)
from ..sim.wire import Command, Status
from .framing import EventKind, event_layout

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
    })


class CommandExecutor(wiring.Component):
    """Executes request frames on the engine, one at a time, and answers each with exactly one response.

    Sequence per frame: on the ``HEADER`` event the command and LEN are checked (unknown command or LEN outside
    the command's range: the decoder is told to ``abort`` and the error is answered at once); payload bytes are
    then consumed as they arrive (WRITE_A/WRITE_B entries and SET_SEEDS lanes are written to the engine as soon
    as they are complete, other arguments are collected); on ``END`` the CRC or timeout is answered, or the
    command executes. RUN answers only when the engine is idle again and, for a draining run, when the drained
    tile has been copied into the executor's result buffer (so READ_RESULT can be repeated). SOFT_RESET pulses
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
    clock-to-out never meets the response logic; no cycle is added). RUN's and
    SET_ROUNDING's arguments are read from a shift register that every payload byte enters (it also holds the
    current WRITE entry and SET_SEEDS seed); only WRITE's ADDR and COUNT are kept apart.

    Latency (byte-stream SoC, ``tests/test_protocol.py::test_rtl_response_latency``): one request byte per
    cycle, except one stall cycle after each complete operand entry (its memory write) or seed. The first response byte leaves the SoC 5 cycles after the last request byte (the second CRC byte)
    was taken, for commands without engine work (e.g. IDENTIFY), and 4 cycles after the LEN byte for a frame
    rejected at its header; RUN adds the engine's ``run_cycles`` and, when draining, ``rows`` result transfers.
    Response bytes follow at one per cycle while the output is ready.

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
        cfg = self.config
        cols = cfg.cols
        aw = max(addr_bits(cfg), b_addr_bits(cfg))
        eng = self.engine
        ev = self.events.payload

        # -- registers --
        cmd = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        status = Signal(8)
        resp_len = Signal(16)
        nin = Signal(range(RUN_ARGS.size + 1))    # payload bytes consumed, saturating at RUN_ARGS.size
        wargs = Signal(8 * WRITE_HEADER.size)     # the first payload bytes (WRITE_A/B: ADDR, COUNT)
        e_max = max(entry_bytes(cfg, "A"), entry_bytes(cfg, "B"))
        # every payload byte shifts in at the top: the last entry (WRITE_A/B), seed (SET_SEEDS), or the whole
        # payload of SET_ROUNDING and RUN (sim.payloads layouts), the last byte received at the top
        sh_bytes = max(e_max, RUN_ARGS.size, ROUNDING_ARGS.size, SEED.size)
        sh = Signal(8 * sh_bytes)
        ecnt = Signal(range(e_max + 1))
        widx = Signal(max(1, aw))                 # entries written (only the address bits are needed)
        sbuf = sh[-8 * SEED.size:]
        scnt = Signal(range(SEED.size))
        lane = Signal(range(cols + 1))
        zero_seed = Signal()
        shift = Signal(range(33))
        mode = Signal()
        got_last = Signal()
        drain = Signal()
        m.d.comb += [eng.shift.eq(shift), eng.mode.eq(mode)]
        m.d.sync += self.engine_reset.eq(0)

        res_w, res_r, res_row, res_row_next, res_rd = self._result_buffer(m)
        known, len_ok = self._header_checks(m)
        is_a, e_len, w_len_ok, w_addr_ok, run_ok, r_flags, r_shift, r_mode = self._arguments(
            m, cmd, length, wargs, sh, widx, lane)
        # w_ok: the WRITE's LEN/COUNT/ADDR checks, registered: the arguments are complete at least one cycle
        # before the first WRITE_ENTRY (an entry is at least one byte after them), and the register keeps the
        # length multiply and the address adders off the path into the engine's write valid (the iCE40 SPRAM's
        # address multiplexer, rtl/operand_memory.py; it was the critical path at 17.2 MHz)
        w_ok = Signal()
        m.d.sync += w_ok.eq(w_len_ok & w_addr_ok)
        lk = self._link_memory(m)
        inc_go, inc_sel = lk["inc_go"], lk["inc_sel"]
        n_link = len(LINK_COUNTERS)

        # -- response registers: payload index, result row byte, payload source (0 none, 1 identity,
        # 2 counters, 3 result) --
        pidx = Signal(range(max(len(lk["ident_bytes"]), 4 * (n_link + len(COUNTER_NAMES))) + 1))
        pidx_next = Signal.like(pidx)            # 0 outside RESPOND/SENDING (so no command decision
        m.d.comb += pidx_next.eq(0)               # reaches the link memory's read address)
        m.d.sync += pidx.eq(pidx_next)
        bidx = Signal(range(result_row_bytes(cfg) + 1))
        source = Signal(2)
        rd_ok, row_reg, row_of = self._response_payload(m, lk, res_r, source, pidx, pidx_next)
        m.d.comb += [self.tx_cmd.eq(cmd), self.tx_seq.eq(seq), self.tx_status.eq(status),
                     self.tx_length.eq(resp_len)]
        zeroed = lk["zeroed"]

        def count(name):
            m.d.comb += [inc_go.eq(1), inc_sel.eq(LINK_COUNTERS.index(name))]

        def respond(st, n=0, src=0):
            m.d.sync += [status.eq(st), resp_len.eq(n), source.eq(src), bidx.eq(0)]
            m.d.comb += [pidx_next.eq(0), res_row_next.eq(0)]
            m.next = "RESPOND"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.events.ready.eq(1)
                with m.If(self.events.valid):
                    m.d.sync += [cmd.eq(self.cmd), seq.eq(self.seq), length.eq(self.length), nin.eq(0),
                                 ecnt.eq(0), widx.eq(0), scnt.eq(0), lane.eq(0), zero_seed.eq(0), wargs.eq(0)]
                    with m.If(ev.kind == EventKind.END):       # timeout before the header was complete
                        count("timeouts")
                        respond(Status.TIMEOUT)
                    with m.Elif(~known):
                        m.d.comb += self.abort.eq(1)
                        count("unknown_commands")
                        respond(Status.UNKNOWN_COMMAND)
                    with m.Elif(~len_ok):
                        m.d.comb += self.abort.eq(1)
                        count("bad_lengths")
                        respond(Status.BAD_LENGTH)
                    with m.Else():
                        m.next = "RECEIVE"
            with m.State("RECEIVE"):
                m.d.comb += self.events.ready.eq(1)
                with m.If(self.events.valid & (ev.kind == EventKind.DATA)):
                    m.d.sync += sh.eq(Cat(sh[8:], ev.data))
                    with m.If(nin != RUN_ARGS.size):
                        m.d.sync += nin.eq(nin + 1)
                    with m.Switch(nin):
                        for i in range(WRITE_HEADER.size):
                            with m.Case(i):
                                m.d.sync += wargs[8 * i:8 * (i + 1)].eq(ev.data)
                    with m.If((cmd == Command.WRITE_A) | (cmd == Command.WRITE_B)):
                        with m.If(nin >= WRITE_HEADER.size):
                            m.d.sync += ecnt.eq(ecnt + 1)
                            with m.If(ecnt == e_len - 1):
                                m.d.sync += ecnt.eq(0)
                                m.next = "WRITE_ENTRY"
                    with m.If(cmd == Command.SET_SEEDS):
                        m.d.sync += scnt.eq(scnt + 1)
                        with m.If(scnt == SEED.size - 1):
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
                with m.If(w_ok):
                    m.d.comb += [eng.a_write.valid.eq(is_a), eng.b_write.valid.eq(~is_a)]
                with m.If(~w_ok | Mux(is_a, eng.a_write.ready, eng.b_write.ready)):
                    m.d.sync += widx.eq(widx + 1)
                    m.next = "RECEIVE"
            with m.State("LOAD_SEED"):
                m.d.comb += eng.seed_load.eq(lane < cols)
                m.d.sync += [lane.eq(lane + 1), zero_seed.eq(zero_seed | (sbuf == 0))]
                m.next = "RECEIVE"
            with m.State("EXECUTE"):
                with m.Switch(cmd):
                    with m.Case(Command.IDENTIFY):
                        count("frames_ok")
                        respond(Status.OK, len(self.identity.to_bytes()), 1)
                    with m.Case(Command.WRITE_A, Command.WRITE_B):
                        with m.If(~w_len_ok):
                            count("bad_lengths")
                            respond(Status.BAD_LENGTH)
                        with m.Elif(~w_addr_ok):
                            count("bad_arguments")
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            count("frames_ok")
                            respond(Status.OK)
                    with m.Case(Command.SET_ROUNDING):
                        with m.If((r_shift > 32) | (r_mode > 1)):
                            count("bad_arguments")
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.d.sync += [shift.eq(r_shift), mode.eq(r_mode[0])]
                            count("frames_ok")
                            respond(Status.OK)
                    with m.Case(Command.SET_SEEDS):
                        with m.If(zero_seed):
                            count("bad_arguments")
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            count("frames_ok")
                            respond(Status.OK)
                    with m.Case(Command.RUN):
                        with m.If(~run_ok):
                            count("bad_arguments")
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.d.sync += [got_last.eq(0), drain.eq((r_flags & RUN_DRAIN) != 0)]
                            m.d.comb += res_row_next.eq(0)
                            m.next = "RUN_ISSUE"
                    with m.Case(Command.READ_RESULT):
                        count("frames_ok")
                        respond(Status.OK, result_bytes(cfg), 3)
                    with m.Case(Command.READ_COUNTERS):
                        count("frames_ok")
                        respond(Status.OK, COUNTER.size * (len(LINK_COUNTERS) + len(COUNTER_NAMES)), 2)
                    with m.Case(Command.SOFT_RESET):
                        count("frames_ok")
                        respond(Status.OK)
            with m.State("RUN_ISSUE"):
                m.d.comb += eng.run.valid.eq(1)
                with m.If(eng.run.ready):
                    m.next = "RUN_WAIT"
            with m.State("RUN_WAIT"):
                m.d.comb += eng.result.ready.eq(1)
                with m.If(eng.result.valid):
                    m.d.comb += [res_w.en.eq(1), res_row_next.eq(res_row + 1)]
                    with m.If(eng.result.payload.last):
                        m.d.sync += got_last.eq(1)
                with m.If(~eng.busy & (~drain | got_last)):
                    count("frames_ok")
                    respond(Status.OK)
            with m.State("RESPOND"):
                m.d.comb += [self.tx_start.eq(1), pidx_next.eq(pidx), res_rd.eq(res_row_next + 1)]
                m.d.sync += row_reg.eq(row_of(res_r.data))      # row 0, read in the cycle of respond()
                m.next = "SENDING"
            with m.State("SENDING"):
                # a link memory byte is valid once it was read for this pidx (not during an increment)
                payload_valid = (source != 0) & ((source == 3) | rd_ok)
                m.d.comb += [self.tx_payload.valid.eq(payload_valid), pidx_next.eq(pidx),
                             res_rd.eq(res_row_next + 1)]
                with m.If(self.tx_payload.ready & payload_valid):
                    m.d.comb += pidx_next.eq(pidx + 1)
                    with m.If(source == 3):
                        m.d.sync += [bidx.eq(bidx + 1), row_reg.eq(row_reg >> 8)]
                        with m.If(bidx == result_row_bytes(cfg) - 1):
                            # the read port shows row res_row + 1 (addressed last cycle, rows have >= 2 bytes)
                            m.d.sync += [bidx.eq(0), row_reg.eq(row_of(res_r.data))]
                            m.d.comb += res_row_next.eq(res_row + 1)
                with m.If(~self.tx_busy):
                    with m.If((cmd == Command.SOFT_RESET) & (status == Status.OK)):
                        m.d.comb += eng.counters_clear.eq(1)
                        m.d.sync += self.engine_reset.eq(1)     # a register: it fans out to the whole engine
                        m.d.sync += [shift.eq(0), mode.eq(0)]
                        m.d.sync += zeroed.eq((1 << n_link) - 1)
                    m.next = "IDLE"
        return m


    def _result_buffer(self, m):
        """The result buffer: one drained tile in block RAM, row r = cols values then cols saturation flags;
        written as the engine's result rows arrive at ``res_row``; read synchronously at ``res_rd``: row 0
        outside RESPOND/SENDING (for the row register's first load, in RESPOND), the row after the next
        ``res_row`` in them (set there). Row ``rows`` is a spare that the read-ahead reaches after the last row
        (never sent)."""
        cfg, eng = self.config, self.engine
        rows, cols, wl = cfg.rows, cfg.cols, cfg.wl
        res_mem = memory.Memory(shape=unsigned(cols * wl + cols), depth=rows + 1, init=[],
                                attrs={"ram_style": "block"})
        m.submodules.result_buffer = res_mem
        res_w = res_mem.write_port()
        res_r = res_mem.read_port()               # synchronous (block RAM)
        res_row = Signal(range(rows + 1))
        res_row_next = Signal.like(res_row)
        res_rd = Signal(range(rows + 2))
        m.d.comb += [res_row_next.eq(res_row), res_rd.eq(0), res_r.addr.eq(res_rd)]
        m.d.sync += res_row.eq(res_row_next)
        m.d.comb += [res_w.addr.eq(res_row),
                     res_w.data.eq(Cat(eng.result.payload.data.as_value(), eng.result.payload.sat))]
        return res_w, res_r, res_row, res_row_next, res_rd

    def _header_checks(self, m):
        """``known`` (CMD is a command) and ``len_ok`` (LEN in its range), from the decoder's header."""
        cfg = self.config
        known = Signal()
        len_ok = Signal()
        with m.Switch(self.cmd):
            for c in Command:
                lo, hi = request_length_range(cfg, c)
                with m.Case(c):
                    m.d.comb += [known.eq(1), len_ok.eq((self.length >= lo) & (self.length <= hi))]
        return known, len_ok

    def _arguments(self, m, cmd, length, wargs, sh, widx, lane):
        """Views of the received arguments through the ``sim.payloads`` layouts, their checks, and the engine's
        write/run/seed payloads driven from them."""
        cfg, eng = self.config, self.engine
        rows, cols, wl = cfg.rows, cfg.cols, cfg.wl
        vb = value_bytes(cfg)
        aw, bw = addr_bits(cfg), b_addr_bits(cfg)
        sh_bytes = len(sh) // 8
        sbuf = sh[-8 * SEED.size:]
        # a memory of 2**n entries: a base below it has no bits above n - 1 and a count up to it none above n:
        # the sums are checked in n + 2 bits
        is_a = cmd == Command.WRITE_A
        e_len = Mux(is_a, entry_bytes(cfg, "A"), entry_bytes(cfg, "B"))
        w_args = data.View(WRITE_HEADER.as_struct(), wargs)
        w_addr, w_count = w_args.addr, w_args.count
        w_len_ok = (w_count != 0) & (length == WRITE_HEADER.size + Mux(is_a, w_count * entry_bytes(cfg, "A"),
                                                                        w_count * entry_bytes(cfg, "B")))

        def fits(base, count, n):               # base + count <= 2**n (the A memory: n = aw, B: n = bw)
            return (base[n:] == 0) & (count[n + 1:] == 0) & (base[:n] + count[:n + 1] <= (1 << n))

        w_addr_ok = Mux(is_a, fits(w_addr, w_count, aw), fits(w_addr, w_count, bw))
        run_args = data.View(RUN_ARGS.as_struct(), sh[-8 * RUN_ARGS.size:])
        r_a, r_b, r_k, r_flags = run_args.a_base, run_args.b_base, run_args.k, run_args.flags
        run_ok = (r_k != 0) & fits(r_a, r_k, aw) & fits(r_b, r_k, bw) & (r_flags <= (RUN_CLEAR | RUN_DRAIN))
        rounding_args = data.View(ROUNDING_ARGS.as_struct(), sh[-8 * ROUNDING_ARGS.size:])
        r_shift, r_mode = rounding_args.shift, rounding_args.mode

        def values_of(n):
            return Cat(*[sh[8 * sh_bytes - 8 * vb * n + 8 * vb * i:][:wl] for i in range(n)])

        m.d.comb += [
            eng.a_write.payload.addr.eq((w_addr + widx)[:aw]),
            eng.a_write.payload.data.eq(values_of(rows)),
            eng.b_write.payload.addr.eq((w_addr + widx)[:bw]),
            eng.b_write.payload.data.eq(values_of(cols)),
            eng.run.payload.a_base.eq(r_a[:aw]), eng.run.payload.b_base.eq(r_b[:bw]),
            eng.run.payload.k.eq(r_k[:aw + 1]),
            eng.run.payload.clear.eq((r_flags & RUN_CLEAR) != 0),
            eng.run.payload.drain.eq((r_flags & RUN_DRAIN) != 0),
            eng.seed_lane.eq(lane),
            eng.seed.eq(sbuf),
        ]
        return is_a, e_len, w_len_ok, w_addr_ok, run_ok, r_flags, r_shift, r_mode

    def _link_memory(self, m):
        """The link memory (block RAM, one byte per address): the link counters, 4 bytes each, little-endian, at
        4 * index (``LINK_COUNTERS`` order), and the IDENTIFY payload (a ROM part) from ``id_base``; and the
        byte-serial counter increment (``inc_go``/``inc_sel`` start one). Returns its signals in a dict."""
        n_link = len(LINK_COUNTERS)
        ident_bytes = self.identity.to_bytes()
        id_base = 1 << (4 * n_link - 1).bit_length()
        link_mem = memory.Memory(shape=unsigned(8), depth=id_base + len(ident_bytes),
                                 init=[0] * id_base + list(ident_bytes))
        m.submodules.link_memory = link_mem
        lk_w = link_mem.write_port()
        lk_r = link_mem.read_port()
        # a counter whose bit is set here reads as zero (reset value; SOFT_RESET sets them all) until its next
        # increment has rewritten its 4 bytes
        zeroed = Signal(n_link, init=(1 << n_link) - 1)
        # byte-serial increment: step 0 reads byte 0; step s = 1..4 writes byte s-1 + carry and reads byte s
        inc_idx = Signal(range(n_link))
        inc_step = Signal(range(6), init=5)       # 5 = idle
        inc_carry = Signal()
        inc_go = Signal()
        inc_sel = Signal(range(n_link))
        inc_busy = inc_step != 5
        rd_zero = Signal()     # the link byte read last cycle belongs to a zeroed counter
        with m.If(inc_go):
            m.d.sync += [inc_idx.eq(inc_sel), inc_step.eq(0), inc_carry.eq(1)]
        with m.Elif(inc_busy):
            m.d.sync += inc_step.eq(inc_step + 1)
            with m.If(inc_step != 0):
                # rd_zero/lk_r.data: byte inc_step - 1 of counter inc_idx, read last cycle
                byte_in = Mux(rd_zero, 0, lk_r.data)
                m.d.comb += [lk_w.en.eq(1), lk_w.addr.eq(inc_idx * 4 + (inc_step - 1)[:2]),
                             lk_w.data.eq(byte_in + inc_carry)]
                m.d.sync += inc_carry.eq(inc_carry & (byte_in == 0xFF))
                with m.If(inc_step == 4):
                    m.d.sync += [zeroed.bit_select(inc_idx, 1).eq(0), inc_step.eq(5)]
        return dict(lk_r=lk_r, zeroed=zeroed, inc_idx=inc_idx, inc_step=inc_step, inc_busy=inc_busy, inc_go=inc_go,
                    inc_sel=inc_sel, id_base=id_base, ident_bytes=ident_bytes, rd_zero=rd_zero)

    def _response_payload(self, m, lk, res_r, source, pidx, pidx_next):
        """The response payload byte: IDENTIFY ROM, counters (link memory, then the engine's) or result rows
        (the low byte of the row register); drives the link memory's read address. Returns ``rd_ok`` (the link
        byte at ``pidx`` is valid), the row register and ``row_of`` (a result buffer row as its payload bytes)."""
        cfg, eng = self.config, self.engine
        cols, wl = cfg.cols, cfg.wl
        vb = value_bytes(cfg)
        n_link = len(LINK_COUNTERS)
        lk_r, zeroed, inc_idx, inc_step = lk["lk_r"], lk["zeroed"], lk["inc_idx"], lk["inc_step"]
        inc_busy, id_base, rd_zero = lk["inc_busy"], lk["id_base"], lk["rd_zero"]
        eng_vec = Cat(*[eng.counters[n] for n in COUNTER_NAMES])

        def row_of(row):
            return Cat(*[row[wl * j:wl * (j + 1)].as_signed().as_unsigned() if vb * 8 == wl else
                         Cat(row[wl * j:wl * (j + 1)], *([row[wl * (j + 1) - 1]] * (vb * 8 - wl)))
                         for j in range(cols)],
                       row[cols * wl:], Const(0, 8 * ((cols + 7) // 8) - cols))
        row_reg = Signal(8 * result_row_bytes(cfg))
        rd_ok = Signal()       # the link memory read last cycle was the payload byte at pidx
        # link memory read address: the increment's while it runs, else the payload byte after this cycle
        with m.If(inc_busy):
            m.d.comb += lk_r.addr.eq(inc_idx * 4 + inc_step[:2])
        with m.Elif(source == 1):
            m.d.comb += lk_r.addr.eq(id_base + pidx_next)
        with m.Else():
            m.d.comb += lk_r.addr.eq(pidx_next)
        m.d.sync += [rd_ok.eq(~inc_busy),
                     rd_zero.eq(zeroed.bit_select(Mux(inc_busy, inc_idx, pidx_next[2:]), 1) & (source != 1))]
        link_byte = Mux(rd_zero, 0, lk_r.data)
        with m.Switch(source):
            with m.Case(1):
                m.d.comb += self.tx_payload.payload.eq(lk_r.data)
            with m.Case(2):
                m.d.comb += self.tx_payload.payload.eq(
                    Mux(pidx < 4 * n_link, link_byte, eng_vec.word_select((pidx - 4 * n_link)[:len(pidx)], 8)))
            with m.Case(3):
                m.d.comb += self.tx_payload.payload.eq(row_reg[:8])
        return rd_ok, row_reg, row_of
