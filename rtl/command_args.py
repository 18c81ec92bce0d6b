"""The command executor's decoding of a request: the header checks and the argument views and checks
(``rtl/command.py`` calls them from ``CommandExecutor.elaborate``; they add signals to the executor's register
namespace ``r``).

Golden model: the ``sim.payloads`` layouts and checks (``request_length_range``, ``run_flags_ok``,
``run_tiles_ok``) as :class:`fxtrain.sim.protocol.ProtocolEmulator` applies them. The received arguments are read
from the executor's payload shift register ``r.sh`` (the last bytes received) and ``r.wargs`` (the first ones) through
the ``sim.payloads`` layouts; RUN's and RUN_TILES' checks are registers (settled before ``EXECUTE`` reads them),
so their carry chains end at flip-flops.

Members
-------
header_checks(executor, m, r)
    ``r.known`` (CMD is a command) and ``r.len_ok`` (LEN in its range), from the decoder's header.
arguments(executor, m, r)
    The argument views and checks (``r.w_ok``, ``r.run_ok``, ``r.tiles_ok``, ...) and the engine's write, run and
    seed payloads driven from them.
flags_ok(config, flags, slot)
    :func:`fxtrain.sim.payloads.run_flags_ok` in gates.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Mux, Signal
from amaranth.lib import data

from ..sim.engine import addr_bits, b_addr_bits
from ..sim.payloads import (ROUNDING_ARGS, RUN_ARGS, RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE, RUN_TILES_ARGS, SEED,
                            WRITE_HEADER, entry_bytes, max_tiles, request_length_range, result_bytes, value_bytes)
from ..sim.wire import Command

__all__ = ["header_checks", "arguments", "flags_ok"]


def header_checks(executor, m, r):
    """``known`` (CMD is a command) and ``len_ok`` (LEN in its range), from the decoder's header."""
    cfg = executor.config
    r.known = Signal()
    r.len_ok = Signal()
    with m.Switch(executor.cmd):
        for c in Command:
            limits = request_length_range(cfg, c)
            if limits is None:
                continue               # a command this device does not have (EXPAND without an expander)
            lo, hi = limits
            with m.Case(c):
                m.d.comb += [r.known.eq(1), r.len_ok.eq((executor.length >= lo) & (executor.length <= hi))]


def arguments(executor, m, r):
    """Views of the received arguments through the ``sim.payloads`` layouts, their checks, and the engine's
    write/run/seed payloads driven from them (a run's from RUN's arguments, or in tile mode from RUN_TILES'
    with the walker's B base)."""
    cfg, eng = executor.config, executor.engine
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
                            & flags_ok(executor.config, r.r_flags, run_args.slot))
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


def flags_ok(config, flags, slot):
    """:func:`fxtrain.sim.payloads.run_flags_ok` in gates: the four flag bits only, LOAD not with CLEAR, SAVE
    not with DRAIN, a LOAD or SAVE run's slot below ``psum_slots`` (without slots: CLEAR and DRAIN only)."""
    if not config.psum_slots:
        return flags <= (RUN_CLEAR | RUN_DRAIN)
    load, save = (flags & RUN_LOAD) != 0, (flags & RUN_SAVE) != 0
    return ((flags <= (RUN_CLEAR | RUN_DRAIN | RUN_LOAD | RUN_SAVE)) & ~(load & ((flags & RUN_CLEAR) != 0))
            & ~(save & ((flags & RUN_DRAIN) != 0)) & (~(load | save) | (slot < config.psum_slots)))
