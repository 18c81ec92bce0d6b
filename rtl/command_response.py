"""The command executor's response path: the result buffer, the response payload source, the ``RESPOND`` and
``SENDING`` states and the RUN_TILES tile walker (``rtl/command.py`` calls them from ``CommandExecutor.elaborate``;
they share the executor's register namespace ``r``).

Golden model: the responses of :class:`fxtrain.sim.protocol.ProtocolEmulator`. Timing and storage are those of
:class:`~.command.CommandExecutor` (its docstring: the result buffer is a block RAM read one row ahead into the
row register, whose low byte is the payload byte; no cycle is added).

Members
-------
result_buffer(executor, m, r)
    One drained tile in block RAM (``r.res_w``, ``r.res_r``, ``r.res_row``).
response_payload(executor, m, r)
    The response payload byte (IDENTIFY ROM, counters or result rows) and the link memory's read address.
respond_states(executor, m, r)
    ``RESPOND`` and ``SENDING``.
tile_walker(executor, m, r)
    RUN_TILES: runs the tiles on the engine while the answer is sent, each drained row through the row register.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, unsigned
from amaranth.lib import memory

from ..sim.engine import COUNTER_NAMES
from ..sim.payloads import LINK_COUNTERS, result_row_bytes, value_bytes
from ..sim.wire import Command, Status

__all__ = ["result_buffer", "response_payload", "respond_states", "tile_walker"]


def result_buffer(executor, m, r):
    """The result buffer: one drained tile in block RAM, row r = cols values then cols saturation flags;
    written as the engine's result rows arrive at ``res_row``; read synchronously at ``res_rd``: row 0
    outside RESPOND/SENDING (the row register's first load, in RESPOND), ``res_row + 1`` in them (tile mode:
    ``res_row``, the row the walker staged), from registers only (no decision of the cycle reaches the port).
    Row ``rows`` is a spare that the read-ahead reaches after the last row (never sent)."""
    cfg, eng = executor.config, executor.engine
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


def response_payload(executor, m, r):
    """The response payload byte: IDENTIFY ROM, counters (link memory, then the engine's) or result rows (the
    low byte of the row register); drives the link memory's read address. Sets ``r.rd_ok`` (the link byte at
    ``pidx`` is valid) and ``r.row_of`` (a result buffer row as its payload bytes)."""
    cfg, eng, lk = executor.config, executor.engine, r.lk
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
            m.d.comb += executor.tx_payload.payload.eq(lk_r.data)
        with m.Case(2):
            m.d.comb += executor.tx_payload.payload.eq(
                Mux(pidx < 4 * n_link, link_byte, eng_vec.word_select((pidx - 4 * n_link)[:len(pidx)], 8)))
        with m.Case(3):
            m.d.comb += executor.tx_payload.payload.eq(r.row_reg[:8])


def respond_states(executor, m, r):
    """``RESPOND`` starts the encoder; ``SENDING`` feeds it the payload (result rows: the result buffer, or in
    tile mode the engine, through the row register) until it is done, then acts on an OK SOFT_RESET."""
    cfg, eng = executor.config, executor.engine
    rrb = result_row_bytes(cfg)
    n_link = len(LINK_COUNTERS)
    # in RESPOND/SENDING the link memory reads the next payload byte and the result buffer, from registers only,
    # row res_row + 1 (tile mode: res_row, the row the walker staged); elsewhere both read address 0
    read_ahead = [r.pidx_next.eq(r.pidx), r.res_rd.eq(Mux(r.tiles, r.res_row, r.res_row + 1))]
    with m.State("RESPOND"):
        m.d.comb += [executor.tx_start.eq(1)] + read_ahead
        m.d.sync += r.row_reg.eq(r.row_of(r.res_r.data))      # row 0, read in the cycle of respond()
        m.next = "SENDING"
    with m.State("SENDING"):
        # a link memory byte is valid once it was read for this pidx (not during an increment)
        payload_valid = Mux(r.source == 3, ~r.tiles | r.row_full, (r.source != 0) & r.rd_ok)
        m.d.comb += [executor.tx_payload.valid.eq(payload_valid)] + read_ahead
        with m.If(executor.tx_payload.ready & payload_valid):
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
        with m.If(~executor.tx_busy):          # (after RUN_TILES' last byte the engine is idle)
            with m.If((r.cmd == Command.SOFT_RESET) & (r.status == Status.OK)):
                m.d.comb += eng.counters_clear.eq(1)
                m.d.sync += executor.engine_reset.eq(1)     # a register: it fans out to the whole engine
                m.d.sync += [r.shift.eq(0), r.mode.eq(0)]
                m.d.sync += r.lk["zeroed"].eq((1 << n_link) - 1)
            m.d.sync += r.tiles.eq(0)
            m.next = "IDLE"


def tile_walker(executor, m, r):
    """RUN_TILES after its OK answer started: offers the engine one clear+drain run per tile (B base
    ``b_cur``, advanced by ``b_step``) while ``t_left`` is not 0, and passes each drained row through the
    result buffer (written at ``res_row``, read back two cycles later) into the row register once that is
    empty, so the last tile stays in the buffer (READ_RESULT repeats it) and the row register keeps its two
    sources. The engine's two result banks, the staged row and the row register are the buffer between the
    engine and the link: the engine computes the next tile while a tile is sent and waits (``stall_out``) when
    both banks are full; the encoder waits for the row register, so no byte is lost or invented."""
    eng = executor.engine
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
        m.d.comb += r.res_row_next.eq(Mux(r.res_row == executor.config.rows - 1, 0, r.res_row + 1))
