"""The EXPAND walker: A entries of a convolution's GEMM generated from a feature map in the B memory.

Golden model: :func:`fxtrain.sim.conv.expand_entries` (the iterator walk, bit for bit, in the same order) and
:func:`fxtrain.sim.conv.expand_cycles` (its cycles). The arguments are ``EXPAND_ARGS`` (``sim/conv.py``), viewed
through ``EXPAND_ARGS.as_struct()``; the command executor checks them (``expand_ok``) before it starts the walk
(``rtl/expand_command.py``).

Walk (one value per cycle, ``V = blocks * count * rows`` values): the two iterators of the spec, the
output-position iterator ``M`` (``n, oy, ox, yb, xb, mw``) and the patch iterator ``P`` (``c, ky, kx, pw``), are
registers loaded from the arguments by ``start``; each has a *saved* copy (loaded with it). Per value: the row
iterator steps, except after the last row of an entry, where it returns to its saved state (the block's start)
or, after the block's last entry, steps and saves the stepped state (the next block's start); the column
iterator steps after each entry except a block's last, after which it returns to its saved state (the start,
never overwritten). The row iterator is ``M`` (forward) or ``P`` (``flags & EXPAND_TRANSPOSED``).

Latency: ``start`` is the cycle before value 0; value ``v`` is addressed in cycle ``v`` (``b_read``/``b_addr``),
its B entry arrives in cycle ``v + 1`` and enters the entry register (row ``r`` of an entry in lanes ``r``), and
an entry's A write (``a_write.valid``, address ``a_base + b*count + i``) is in the cycle after its last row
arrived: the last write is in cycle ``V + 1``, in which ``done`` is high. From ``start`` to ``done``:
``V + EXPAND_LATENCY`` cycles (``expand_cycles``), ``EXPAND_LATENCY = 2`` (the B read, the A write register).

Exact arithmetic (adders and comparators only, no multiplier, no divider):

* value = word ``mw + pw`` of the map, lane ``word mod P`` of B entry ``(f_base + word >> log2 P) mod b_depth``,
  when ``n < N``, ``c < C``, ``0 <= yb + ky < H`` and ``0 <= xb + kx < W``; else 0. ``P =
  fmap_words_per_entry``, ``b_depth`` a power of two, so only the low ``log2(P) + log2(b_depth)`` bits of
  ``mw``, ``pw`` and the steps matter: the word registers keep those (the spec's 32-bit word wraps alike).
* ``n`` and ``c`` only increase (by 1): 17-bit registers that stop at ``2**16`` (then ``>= N`` like the spec's
  unbounded count, as N < 2**16). ``yb``/``xb`` increase by ``SH``/``SW`` until they are reset to ``-PH``/``-PW``:
  18-bit two's complement registers that stop once ``>= 2**16`` (then ``yb + ky >= H`` like the spec's value,
  as H < 2**16). ``ox, oy`` (16 bits) and ``kx, ky`` (8 bits) never exceed their start or ``OW - 1`` etc. So the
  walk equals the spec for every argument that passes ``expand_ok``, not only for those ``expand_args`` makes.

Members
-------
Expander
    The component.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.conv import EXPAND_ARGS, EXPAND_LATENCY, EXPAND_TRANSPOSED, fmap_words_per_entry
from ..sim.engine import b_addr_bits, engine_layouts
from ..sim.gemm import EngineConfig

__all__ = ["Expander"]


class Expander(wiring.Component):
    """EXPAND's iterator walk (module docstring), for ``GemmEngine(config)``.

    Members
    -------
    args : In(EXPAND_ARGS.as_struct())
        The request's arguments; held from ``start`` until ``done``.
    start : In(1)
        Load the iterators and counters (the arguments must have passed ``expand_ok``).
    b_read : Out(1)
        A B entry is addressed this cycle (a register: high in cycles ``0 .. V-1``).
    b_addr : Out(log2 b_depth)
    b_data : In(ArrayLayout(signed(wl), cols))
        The entry addressed in the previous cycle.
    a_write : Out(stream.Signature(engine a_write layout))
        One A entry per ``rows`` values; the sink must be always ready (``ready`` is not looked at).
    done : Out(1)
        The cycle of the last A write (``expand_cycles - 1`` cycles after ``start``).
    latency : int
        ``EXPAND_LATENCY``.
    """

    latency = EXPAND_LATENCY

    def __init__(self, config):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        self.config = config
        lay = engine_layouts(config)
        super().__init__({
            "args": In(EXPAND_ARGS.as_struct()),
            "start": In(1),
            "b_read": Out(1),
            "b_addr": Out(b_addr_bits(config)),
            "b_data": In(lay["b_write"]["data"].shape),
            "a_write": Out(stream.Signature(lay["a_write"])),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        it = self._iterators(m)
        w = self._walk(m, it)
        self._datapath(m, it, w)
        return m

    def _iterators(self, m):
        """The M and P registers, their saved copies, start values and stepped states (the spec's ``step_m`` /
        ``step_p``, as expressions of the registers)."""
        a = self.args
        it = SimpleNamespace()
        it.s = s = fmap_words_per_entry(self.config).bit_length() - 1          # log2 P
        it.bw = b_addr_bits(self.config)
        it.ww = ww = s + it.bw                                    # word bits that reach the B address

        def regs(prefix, shapes):
            return {f: Signal(shape, name=f"{prefix}_{f}") for f, shape in shapes.items()}

        m_shapes = {"n": 17, "oy": 16, "ox": 16, "yb": signed(18), "xb": signed(18), "mw": ww}
        p_shapes = {"c": 17, "ky": 8, "kx": 8, "pw": ww}
        it.ms, it.ms_save, it.m_step = regs("m", m_shapes), regs("m_save", m_shapes), regs("m_step", m_shapes)
        it.ps, it.ps_save, it.p_step = regs("p", p_shapes), regs("p_save", p_shapes), regs("p_step", p_shapes)
        it.m_start = {"n": a.m_n, "oy": a.m_oy, "ox": a.m_ox, "yb": a.m_yb.as_signed(), "xb": a.m_xb.as_signed(),
                      "mw": a.m_word[:ww]}
        it.p_start = {"c": a.p_c, "ky": a.p_ky, "kx": a.p_kx, "pw": a.p_word[:ww]}
        ms, ps, m_step, p_step = it.ms, it.ps, it.m_step, it.p_step

        def sat_add(x, step, top_bit):       # x + step, or x once x >= 2**top_bit (x non-negative there)
            stop = x[top_bit] & ~x[len(x) - 1] if x.shape().signed else x[top_bit]
            return Mux(stop, x, x + step)

        def same(step, state, fields):
            return [step[f].eq(state[f]) for f in fields]

        with m.If(ms["ox"] + 1 < a.ow):
            m.d.comb += same(m_step, ms, ("n", "oy", "yb")) + [
                m_step["ox"].eq(ms["ox"] + 1), m_step["xb"].eq(sat_add(ms["xb"], a.sw, 16)),
                m_step["mw"].eq(ms["mw"] + a.sw)]
        with m.Elif(ms["oy"] + 1 < a.oh):
            m.d.comb += same(m_step, ms, ("n",)) + [
                m_step["oy"].eq(ms["oy"] + 1), m_step["ox"].eq(0), m_step["yb"].eq(sat_add(ms["yb"], a.sh, 16)),
                m_step["xb"].eq(-a.pw), m_step["mw"].eq(ms["mw"] + a.m_row_step[:ww])]
        with m.Else():
            m.d.comb += [m_step["n"].eq(sat_add(ms["n"], 1, 16)), m_step["oy"].eq(0), m_step["ox"].eq(0),
                         m_step["yb"].eq(-a.ph), m_step["xb"].eq(-a.pw),
                         m_step["mw"].eq(ms["mw"] + a.m_img_step[:ww])]
        with m.If(ps["kx"] + 1 < a.kw):
            m.d.comb += same(p_step, ps, ("c", "ky")) + [p_step["kx"].eq(ps["kx"] + 1),
                                                         p_step["pw"].eq(ps["pw"] + 1)]
        with m.Elif(ps["ky"] + 1 < a.kh):
            m.d.comb += same(p_step, ps, ("c",)) + [p_step["ky"].eq(ps["ky"] + 1), p_step["kx"].eq(0),
                                                    p_step["pw"].eq(ps["pw"] + a.p_row_step[:ww])]
        with m.Else():
            m.d.comb += [p_step["c"].eq(sat_add(ps["c"], 1, 16)), p_step["ky"].eq(0), p_step["kx"].eq(0),
                         p_step["pw"].eq(ps["pw"] + a.p_chan_step[:ww])]
        return it

    def _walk(self, m, it):
        """The walk counters (row of the entry, entries and blocks left) and the iterators' updates."""
        a, rows = self.args, self.config.rows
        w = SimpleNamespace(active=Signal(), rcnt=Signal(range(rows)), i_left=Signal(16), b_left=Signal(16))
        active, rcnt, i_left, b_left = w.active, w.rcnt, w.i_left, w.b_left
        w.end_entry = end_entry = rcnt == rows - 1
        last_entry = i_left == 0
        w.last = end_entry & last_entry & (b_left == 0)
        transposed = (a.flags & EXPAND_TRANSPOSED) != 0
        # the row iterator: step (or, at an entry's end: back to saved, or step and save after the block's last
        # entry); the column iterator: hold (or, at an entry's end: step, or back to saved after the last entry)
        row_step = active & (~end_entry | last_entry)
        row_back = active & end_entry & ~last_entry
        row_save = active & end_entry & last_entry
        col_step = active & end_entry & ~last_entry
        col_back = active & end_entry & last_entry

        def drive(state, save, step, start, is_row):
            go_step = Mux(is_row, row_step, col_step)
            go_back = Mux(is_row, row_back, col_back)
            go_save = is_row & row_save
            for f in state:
                with m.If(self.start):
                    m.d.sync += [state[f].eq(start[f]), save[f].eq(start[f])]
                with m.Else():
                    with m.If(go_back):
                        m.d.sync += state[f].eq(save[f])
                    with m.Elif(go_step):
                        m.d.sync += state[f].eq(step[f])
                    with m.If(go_save):
                        m.d.sync += save[f].eq(step[f])

        drive(it.ms, it.ms_save, it.m_step, it.m_start, ~transposed)
        drive(it.ps, it.ps_save, it.p_step, it.p_start, transposed)

        with m.If(self.start):
            m.d.sync += [active.eq(1), rcnt.eq(0), i_left.eq(a.count - 1), b_left.eq(a.blocks - 1)]
        with m.Elif(active):
            m.d.sync += rcnt.eq(rcnt + 1)
            with m.If(end_entry):
                m.d.sync += [rcnt.eq(0), i_left.eq(i_left - 1)]
                with m.If(last_entry):
                    m.d.sync += [i_left.eq(a.count - 1), b_left.eq(b_left - 1)]
                    with m.If(b_left == 0):
                        m.d.sync += active.eq(0)
        return w

    def _datapath(self, m, it, w):
        """Stage 0: B address and validity; stage 1: the lane into the entry register; stage 2: the A write."""
        a, rows, wl = self.args, self.config.rows, self.config.wl
        ms, ps, s = it.ms, it.ps, it.s
        # ---- stage 0 (cycle v): the B address and the value's validity, from the iterator registers
        word = Signal(it.ww)
        y = ms["yb"] + ps["ky"]
        x = ms["xb"] + ps["kx"]
        valid = ((ms["n"] < a.n) & (ps["c"] < a.c) & (y >= 0) & (y < a.h) & (x >= 0) & (x < a.w))
        m.d.comb += [word.eq(ms["mw"] + ps["pw"]), self.b_read.eq(w.active),
                     self.b_addr.eq(a.f_base[:it.bw] + word[s:])]
        # ---- stage 1 (cycle v + 1): the lane of the B entry (0 if invalid) into the entry register
        valid_q, lane_q, got_q = Signal(), Signal(max(s, 1)), Signal()
        end_q, fin_q = Signal(), Signal()
        m.d.sync += [valid_q.eq(valid), got_q.eq(w.active), end_q.eq(w.active & w.end_entry),
                     fin_q.eq(w.active & w.last)]
        if s:
            m.d.sync += lane_q.eq(word[:s])
        value = Mux(valid_q, self.b_data[lane_q] if s else self.b_data[0], 0)
        entry = Signal(rows * wl)
        with m.If(got_q):
            m.d.sync += entry.eq(Cat(entry[wl:], value[:wl]) if rows > 1 else value[:wl])
        # ---- stage 2 (cycle v + 2 for an entry's last row): the A write
        wr_q, done_q = Signal(), Signal()
        a_addr = Signal.like(self.a_write.payload.addr)
        m.d.sync += [wr_q.eq(end_q), done_q.eq(fin_q)]
        with m.If(self.start):
            m.d.sync += a_addr.eq(a.a_base)
        with m.Elif(wr_q):
            m.d.sync += a_addr.eq(a_addr + 1)
        m.d.comb += [self.a_write.valid.eq(wr_q), self.a_write.payload.addr.eq(a_addr),
                     self.a_write.payload.data.eq(entry), self.done.eq(done_q)]
