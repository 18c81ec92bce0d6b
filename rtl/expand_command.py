"""The command executor's EXPAND part (``rtl/command.py`` calls it only when ``config.expander``).

Golden model: ``ProtocolEmulator._expand`` (``sim/protocol.py``): EXPAND with a good CRC is checked by
:func:`fxtrain.sim.conv.expand_ok` (BAD_ARGUMENT, nothing written), else the :class:`~.expander.Expander` writes
its A entries and the executor answers OK with an empty payload.

Latency: the ``EXPAND`` state lasts exactly :func:`fxtrain.sim.conv.expand_cycles` cycles (the walker's ``start``
is the ``EXECUTE`` cycle, its ``done`` the last ``EXPAND`` cycle, which calls ``respond``), so the first response
byte leaves ``expand_cycles`` cycles later than an IDENTIFY's would (5 cycles after the last request byte in
the byte-stream SoC). A rejected EXPAND answers like any BAD_ARGUMENT, from ``EXECUTE``.

Argument check without a multiplier: ``a_base + blocks * count <= depth`` needs the product ``blocks * count``
(32 bits); it is computed by shift-and-add, one bit of ``blocks`` per cycle, starting when the 8th payload byte
(the end of BLOCKS, which ``EXPAND_ARGS`` puts before the geometry) is taken; the 55 bytes that follow take at
least as many cycles, so the product (16 steps at most) is final long before the END event. The check is a
register (``ok``) like RUN's ``run_ok``: the arguments are settled when ``EXECUTE`` reads it.

Members
-------
expand_setup(executor, m, r) -> namespace
    The walker, its argument view (the executor's payload shift register ``r.sh``) and the check.
expand_execute(m, r)
    The ``EXECUTE`` action (inside ``m.Case(Command.EXPAND)``).
expand_state(executor, m, r)
    The ``EXPAND`` state.
expand_wiring(executor, m, r)
    The walker's engine ports: A writes through ``a_write``, B reads through the idle engine's read port.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Mux, Signal
from amaranth.lib import data

from ..sim.conv import EXPAND_ARGS
from ..sim.wire import Command, Status
from .expander import Expander
from .framing import EventKind

__all__ = ["expand_setup", "expand_execute", "expand_state", "expand_wiring"]

_SIZES = ("n", "c", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw")


def expand_setup(executor, m, r):
    """Adds the walker (``m.submodules.expander``) and returns the namespace ``x`` (``x.walker``, ``x.ok``)."""
    cfg = executor.config
    x = SimpleNamespace()
    m.submodules.expander = x.walker = walker = Expander(cfg)
    if len(r.sh) < 8 * EXPAND_ARGS.size:
        raise ValueError("the executor's payload register must hold EXPAND_ARGS with an expander")
    args = data.View(EXPAND_ARGS.as_struct(), r.sh[-8 * EXPAND_ARGS.size:])
    m.d.comb += walker.args.eq(args)
    # blocks * count by shift-and-add, from the cycle the 8th payload byte is taken
    head = EXPAND_ARGS.offset("blocks") + 2
    if head > 8 or EXPAND_ARGS.offset("count") + 2 > head:
        raise ValueError("EXPAND_ARGS must carry COUNT and BLOCKS in its first 8 bytes (sim/conv.py)")
    ev = executor.events
    taken = (ev.valid & ev.ready & (ev.payload.kind == EventKind.DATA) & (r.cmd == Command.EXPAND)
             & (r.nin == head - 1))
    first = Cat(r.sh[len(r.sh) - 8 * (head - 1):], ev.payload.data)          # payload bytes 0 .. head-1
    f_count = first[8 * EXPAND_ARGS.offset("count"):][:16]
    f_blocks = first[8 * EXPAND_ARGS.offset("blocks"):][:16]
    prod, mcand, mplier = Signal(32), Signal(32), Signal(16)
    with m.If(taken):
        m.d.sync += [prod.eq(0), mcand.eq(f_count), mplier.eq(f_blocks)]
    with m.Elif(mplier != 0):
        m.d.sync += [prod.eq(prod + Mux(mplier[0], mcand, 0)), mcand.eq(mcand << 1),
                     mplier.eq(mplier >> 1)]
    # expand_ok (sim/conv.py), registered
    x.ok = Signal()
    sizes = Cat(*[getattr(args, f) != 0 for f in _SIZES]).all()
    m.d.sync += x.ok.eq((args.count != 0) & (args.blocks != 0) & (args.a_base + prod <= cfg.depth)
                        & (args.f_base < cfg.b_depth) & sizes)
    return x


def expand_execute(m, r):
    """``EXECUTE`` for EXPAND: BAD_ARGUMENT, or start the walker and enter ``EXPAND``."""
    with m.If(~r.x.ok):
        r.count("bad_arguments")
        r.respond(Status.BAD_ARGUMENT)
    with m.Else():
        m.d.comb += r.x.walker.start.eq(1)
        m.next = "EXPAND"


def expand_state(executor, m, r):
    """``EXPAND``: wait for the walker's last A write, then answer OK (empty payload)."""
    with m.State("EXPAND"):
        with m.If(r.x.walker.done):
            r.count("frames_ok")
            r.respond(Status.OK)


def expand_wiring(executor, m, r):
    """The walker's A writes replace the WRITE path's (never in the same cycle: the walker writes only in
    ``EXPAND``); its B reads use the engine's idle read port (no run is issued during ``EXPAND``)."""
    eng, walker = executor.engine, r.x.walker
    with m.If(walker.a_write.valid):
        m.d.comb += [eng.a_write.valid.eq(1), eng.a_write.payload.eq(walker.a_write.payload)]
    m.d.comb += [eng.b_read_en.eq(walker.b_read), eng.b_read_addr.eq(walker.b_addr),
                 walker.b_data.eq(eng.b_read_data)]
