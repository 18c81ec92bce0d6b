"""The link memory of the command executor (``rtl/command.py``): the link counters and the IDENTIFY payload in one
byte-wide block RAM, with a byte-serial counter increment.

Latency and arithmetic: an increment started by ``inc_go`` takes 5 cycles (step 0 reads byte 0, step ``s = 1..4``
writes byte ``s-1`` plus the carry and reads byte ``s``); the carry into byte ``b + 1`` is ``carry & (byte ==
0xFF)``, so a counter wraps exactly at 2**32. A counter whose *zeroed* flag is set reads as 0 and its next
increment writes 1.

Members
-------
link_memory
    Adds the memory and the increment to a module; returns their signals.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Signal, unsigned
from amaranth.lib import memory

from ..sim.payloads import LINK_COUNTERS

__all__ = ["link_memory"]


def link_memory(m, identity):
    """The link memory (block RAM, one byte per address): the link counters, 4 bytes each, little-endian, at
    4 * index (``LINK_COUNTERS`` order), and the IDENTIFY payload (a ROM part) from ``id_base``; and the
    byte-serial counter increment (``inc_go``/``inc_sel`` start one). Returns its signals in a dict."""
    n_link = len(LINK_COUNTERS)
    ident_bytes = identity.to_bytes()
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
    # rd_zero/lk_r.data: byte inc_step - 1 of counter inc_idx, read last cycle. The write port depends on registers
    # only (not on inc_go, which comes from the command checks): an increment always ends before the next one
    # starts (a response lasts at least 10 cycles, an increment 5)
    byte_in = Mux(rd_zero, 0, lk_r.data)
    m.d.comb += [lk_w.en.eq(inc_busy & (inc_step != 0)), lk_w.addr.eq(inc_idx * 4 + (inc_step - 1)[:2]),
                 lk_w.data.eq(byte_in + inc_carry)]
    with m.If(inc_go):
        m.d.sync += [inc_idx.eq(inc_sel), inc_step.eq(0), inc_carry.eq(1)]
    with m.Elif(inc_busy):
        m.d.sync += inc_step.eq(inc_step + 1)
        with m.If(inc_step != 0):
            m.d.sync += inc_carry.eq(inc_carry & (byte_in == 0xFF))
            with m.If(inc_step == 4):
                m.d.sync += [zeroed.bit_select(inc_idx, 1).eq(0), inc_step.eq(5)]
    return dict(lk_r=lk_r, zeroed=zeroed, inc_idx=inc_idx, inc_step=inc_step, inc_busy=inc_busy, inc_go=inc_go,
                inc_sel=inc_sel, id_base=id_base, ident_bytes=ident_bytes, rd_zero=rd_zero)
