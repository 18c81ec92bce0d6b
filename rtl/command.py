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
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.engine import COUNTER_NAMES, addr_bits, engine_layouts
from ..sim.gemm import EngineConfig
from ..sim.protocol import (LINK_COUNTERS, RUN_CLEAR, RUN_DRAIN, Command, Identity, Status, entry_bytes,
                            request_length_range, result_row_bytes, value_bytes)
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
        One-cycle pulse after a SOFT_RESET response.
    link_counters : Out(32 * len(LINK_COUNTERS))
        The link counters, ``LINK_COUNTERS`` order, 32 bits each, wrapping.
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
            "link_counters": Out(32 * len(LINK_COUNTERS)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        depth, rows, cols, wl = cfg.depth, cfg.rows, cfg.cols, cfg.wl
        vb = value_bytes(cfg)
        aw = addr_bits(cfg)
        eng = self.engine
        ev = self.events.payload

        # -- registers --
        cmd = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        status = Signal(8)
        resp_len = Signal(16)
        nin = Signal(16)                          # payload bytes consumed
        args = Signal(72)                         # the first 9 payload bytes, byte i at bits [8i, 8i+8)
        e_max = max(entry_bytes(cfg, "A"), entry_bytes(cfg, "B"))
        ebuf = Signal(8 * e_max)
        ecnt = Signal(range(e_max + 1))
        widx = Signal(17)
        sbuf = Signal(32)
        scnt = Signal(2)
        lane = Signal(range(cols + 1))
        zero_seed = Signal()
        shift = Signal(range(33))
        mode = Signal()
        got_last = Signal()
        drain = Signal()
        counters = {name: Signal(32, name=f"count_{name}") for name in LINK_COUNTERS}
        m.d.comb += self.link_counters.eq(Cat(*counters.values()))
        m.d.comb += [eng.shift.eq(shift), eng.mode.eq(mode)]

        # -- result buffer: one drained tile, row r = cols values then cols saturation flags --
        res_mem = memory.Memory(shape=unsigned(cols * wl + cols), depth=rows, init=[])
        m.submodules.result_buffer = res_mem
        res_w = res_mem.write_port()
        res_r = res_mem.read_port(domain="comb")
        res_row = Signal(range(rows + 1))
        m.d.comb += [res_w.addr.eq(res_row),
                     res_w.data.eq(Cat(eng.result.payload.data.as_value(), eng.result.payload.sat))]

        # -- header checks --
        known = Signal()
        len_ok = Signal()
        with m.Switch(self.cmd):
            for c in Command:
                lo, hi = request_length_range(cfg, c)
                with m.Case(c):
                    m.d.comb += [known.eq(1), len_ok.eq((self.length >= lo) & (self.length <= hi))]

        # -- argument views --
        is_a = cmd == Command.WRITE_A
        e_len = Mux(is_a, entry_bytes(cfg, "A"), entry_bytes(cfg, "B"))
        w_addr, w_count = args[0:16], args[16:32]
        w_len_ok = (w_count != 0) & (length == 4 + w_count * e_len)
        w_addr_ok = (w_addr + w_count) <= depth
        r_a, r_b, r_k, r_flags = args[0:16], args[16:32], args[32:64], args[64:72]
        run_ok = ((r_k >= 1) & (r_k <= depth) & (r_a + r_k <= depth) & (r_b + r_k <= depth) & (r_flags <= 3))

        def values_of(n):
            return Cat(*[ebuf[8 * e_max - 8 * vb * n + 8 * vb * i:][:wl] for i in range(n)])

        m.d.comb += [
            eng.a_write.payload.addr.eq((w_addr + widx)[:aw]),
            eng.a_write.payload.data.eq(values_of(rows)),
            eng.b_write.payload.addr.eq((w_addr + widx)[:aw]),
            eng.b_write.payload.data.eq(values_of(cols)),
            eng.run.payload.a_base.eq(r_a[:aw]), eng.run.payload.b_base.eq(r_b[:aw]),
            eng.run.payload.k.eq(r_k[:aw + 1]),
            eng.run.payload.clear.eq((r_flags & RUN_CLEAR) != 0),
            eng.run.payload.drain.eq((r_flags & RUN_DRAIN) != 0),
            eng.seed_lane.eq(lane),
            eng.seed.eq(sbuf),
        ]

        # -- response payload sources --
        pidx = Signal(16)
        bidx = Signal(range(result_row_bytes(cfg) + 1))
        ident = Const(int.from_bytes(self.identity.to_bytes(), "little"), 8 * len(self.identity.to_bytes()))
        count_vec = Cat(self.link_counters, *[eng.counters[n] for n in COUNTER_NAMES])
        row = res_r.data
        row_vec = Cat(*[row[wl * j:wl * (j + 1)].as_signed().as_unsigned() if vb * 8 == wl else
                        Cat(row[wl * j:wl * (j + 1)], *([row[wl * (j + 1) - 1]] * (vb * 8 - wl)))
                        for j in range(cols)],
                      row[cols * wl:], Const(0, 8 * ((cols + 7) // 8) - cols))
        m.d.comb += res_r.addr.eq(res_row)
        source = Signal(2)     # 0 none, 1 identity, 2 counters, 3 result
        with m.Switch(source):
            with m.Case(1):
                m.d.comb += self.tx_payload.payload.eq(ident.word_select(pidx[:6], 8))
            with m.Case(2):
                m.d.comb += self.tx_payload.payload.eq(count_vec.word_select(pidx[:8], 8))
            with m.Case(3):
                m.d.comb += self.tx_payload.payload.eq(row_vec.word_select(bidx, 8))
        m.d.comb += [self.tx_cmd.eq(cmd), self.tx_seq.eq(seq), self.tx_status.eq(status),
                     self.tx_length.eq(resp_len)]

        def count(name):
            m.d.sync += counters[name].eq(counters[name] + 1)

        def respond(st, n=0, src=0):
            m.d.sync += [status.eq(st), resp_len.eq(n), source.eq(src), pidx.eq(0), bidx.eq(0),
                         res_row.eq(0)]
            m.next = "RESPOND"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.events.ready.eq(1)
                with m.If(self.events.valid):
                    m.d.sync += [cmd.eq(self.cmd), seq.eq(self.seq), length.eq(self.length), nin.eq(0),
                                 ecnt.eq(0), widx.eq(0), scnt.eq(0), lane.eq(0), zero_seed.eq(0), args.eq(0)]
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
                    m.d.sync += nin.eq(nin + 1)
                    with m.Switch(nin):
                        for i in range(9):
                            with m.Case(i):
                                m.d.sync += args[8 * i:8 * (i + 1)].eq(ev.data)
                    with m.If((cmd == Command.WRITE_A) | (cmd == Command.WRITE_B)):
                        with m.If(nin >= 4):
                            m.d.sync += [ebuf.eq(Cat(ebuf[8:], ev.data)), ecnt.eq(ecnt + 1)]
                            with m.If(ecnt == e_len - 1):
                                m.d.sync += ecnt.eq(0)
                                m.next = "WRITE_ENTRY"
                    with m.If(cmd == Command.SET_SEEDS):
                        m.d.sync += [sbuf.eq(Cat(sbuf[8:], ev.data)), scnt.eq(scnt + 1)]
                        with m.If(scnt == 3):
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
                with m.If(w_len_ok & w_addr_ok):
                    m.d.comb += [eng.a_write.valid.eq(is_a), eng.b_write.valid.eq(~is_a)]
                with m.If(~(w_len_ok & w_addr_ok) | Mux(is_a, eng.a_write.ready, eng.b_write.ready)):
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
                        with m.If((args[0:8] > 32) | (args[8:16] > 1)):
                            count("bad_arguments")
                            respond(Status.BAD_ARGUMENT)
                        with m.Else():
                            m.d.sync += [shift.eq(args[0:8]), mode.eq(args[8])]
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
                            m.d.sync += [got_last.eq(0), drain.eq((r_flags & RUN_DRAIN) != 0), res_row.eq(0)]
                            m.next = "RUN_ISSUE"
                    with m.Case(Command.READ_RESULT):
                        count("frames_ok")
                        respond(Status.OK, rows * result_row_bytes(cfg), 3)
                    with m.Case(Command.READ_COUNTERS):
                        count("frames_ok")
                        respond(Status.OK, 4 * (len(LINK_COUNTERS) + len(COUNTER_NAMES)), 2)
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
                    m.d.comb += res_w.en.eq(1)
                    m.d.sync += res_row.eq(res_row + 1)
                    with m.If(eng.result.payload.last):
                        m.d.sync += got_last.eq(1)
                with m.If(~eng.busy & (~drain | got_last)):
                    count("frames_ok")
                    respond(Status.OK)
            with m.State("RESPOND"):
                m.d.comb += self.tx_start.eq(1)
                m.next = "SENDING"
            with m.State("SENDING"):
                m.d.comb += self.tx_payload.valid.eq(source != 0)
                with m.If(self.tx_payload.ready & (source != 0)):
                    m.d.sync += pidx.eq(pidx + 1)
                    with m.If(source == 3):
                        m.d.sync += bidx.eq(bidx + 1)
                        with m.If(bidx == result_row_bytes(cfg) - 1):
                            m.d.sync += [bidx.eq(0), res_row.eq(res_row + 1)]
                with m.If(~self.tx_busy):
                    with m.If((cmd == Command.SOFT_RESET) & (status == Status.OK)):
                        m.d.comb += [self.engine_reset.eq(1), eng.counters_clear.eq(1)]
                        m.d.sync += [shift.eq(0), mode.eq(0)]
                        m.d.sync += [c.eq(0) for c in counters.values()]
                    m.next = "IDLE"
        return m
