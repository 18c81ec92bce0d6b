"""An engine operand memory: one write port, one synchronous read port, in block RAM or in iCE40 SPRAM.

Two implementations of one contract, chosen by :func:`memory_kind` from the platform the design is elaborated
for (or forced by the ``kind`` argument), like :mod:`.multiplier`:

``"generic"``
    An ``amaranth.lib.memory.Memory`` with a write port and a synchronous read port: block RAM on iCE40 and ECP5
    (Yosys maps it; on ECP5 a deep memory is several DP16KD cascaded by Yosys), flip-flops or simulator arrays
    in simulation.
``"spram"``
    iCE40UP5K ``SB_SPRAM256KA`` instances (16,384 x 16 bits each, single-ported): ``ceil(width / 16)`` side by
    side per bank and ``ceil(depth / 16384)`` banks, so a 32-bit wide B memory of 16K entries (the iCEBreaker's
    4 x 2 engine) takes 2 of the 4 SPRAMs and 32K entries all 4 (:func:`spram_count`). The one address port
    carries the write address in a write cycle and the read address otherwise; the bank of a read is registered
    with the data, and the read data of the bank read last is selected.

Contract (both kinds): ``w_en`` writes ``w_data`` at ``w_addr`` at the end of the cycle; ``r_data`` in cycle
``t + 1`` is the entry at ``r_addr`` in cycle ``t`` (before a write in cycle ``t``), **provided ``w_en`` is low
in cycle ``t``**: the user must not need the read data of a write cycle (in SPRAM the read port *is* the write
port; its output is undefined after a write). :class:`fxtrain.rtl.engine.GemmEngine` guarantees it by holding
``b_write.ready`` low in every cycle in which a run reads the B memory.

No simulator ships a model of ``SB_SPRAM256KA`` that the benches load, so the Verilog benches append
:data:`fxtrain.sim.ice40_models.SB_SPRAM256KA_MODEL` (behavioural, as Yosys' ``cells_sim.v``); the code under
test is the same ``Instance`` that goes into the bitstream. The instance is used instead of
``synth_ice40 -spram`` inference because inference needs one address shared by read and write in the source,
applies to every memory of the design at once, and silently falls back to block RAM (which would not fit)
when a memory does not match the pattern; an instance either maps or fails the build (``docs/engine.md``).

Latency 1 (read); the write lands at the end of its cycle.

Members
-------
MEMORY_KINDS
    ``("generic", "spram")``.
SPRAM_DEPTH, SPRAM_WIDTH, ICE40UP5K_SPRAMS : int
    16384, 16, 4.
spram_count
    SPRAM blocks a ``width x depth`` memory takes.
memory_kind
    The implementation for a platform (``"auto"`` resolution).
OperandMemory
    The component.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .platform_family import platform_family

__all__ = ["MEMORY_KINDS", "SPRAM_DEPTH", "SPRAM_WIDTH", "ICE40UP5K_SPRAMS", "spram_count", "memory_kind",
           "OperandMemory"]

MEMORY_KINDS = ("generic", "spram")
SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16
ICE40UP5K_SPRAMS = 4
#: iCE40 memories at least this deep go to SPRAM under "auto" (a 2048-deep memory would take width / 2 of the
#: UP5K's 30 4-Kbit block RAMs, a 16-bit one 8 of them; shallower ones stay in block RAM)
SPRAM_AUTO_MIN_DEPTH = 2048


def spram_count(width, depth):
    """``SB_SPRAM256KA`` blocks of a ``width``-bit, ``depth``-entry memory: ``ceil(width/16) * ceil(depth/16384)``."""
    return -(-width // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


def memory_kind(kind, platform, depth):
    """``kind`` itself, or for ``"auto"``: ``"spram"`` on an iCE40 platform (a platform object, or a family
    name such as a board target's ``"ice40"``) for a memory of at least ``SPRAM_AUTO_MIN_DEPTH`` entries,
    ``"generic"`` otherwise (no platform, i.e. simulation, ECP5, small memories)."""
    if kind == "auto":
        ice40 = platform_family(platform) == "ice40"
        return "spram" if ice40 and depth >= SPRAM_AUTO_MIN_DEPTH else "generic"
    if kind not in MEMORY_KINDS:
        raise ValueError(f"Operand memory kind must be 'auto' or one of {MEMORY_KINDS}, not {kind!r}")
    return kind


class OperandMemory(wiring.Component):
    """``depth`` entries of ``width`` bits, one write and one synchronous read port (module docstring).

    Parameters
    ----------
    width, depth : int
        ``depth`` a power of two.
    kind : str
        ``"auto"``, ``"generic"`` or ``"spram"``.

    Members
    -------
    w_addr, w_data, w_en : In
    r_addr : In
    r_data : Out(width)
        Entry at the previous cycle's ``r_addr`` (undefined after a write cycle).
    """

    def __init__(self, width, depth, kind="auto"):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"Operand memory width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"Operand memory depth must be a power of two of at least 2, not {depth!r}")
        if kind != "auto":
            memory_kind(kind, None, depth)      # validates
        self.width, self.depth, self.kind = width, depth, kind
        aw = depth.bit_length() - 1
        super().__init__({"w_addr": In(aw), "w_data": In(width), "w_en": In(1), "r_addr": In(aw),
                          "r_data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        if memory_kind(self.kind, platform, self.depth) == "generic":
            m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                         rd.addr.eq(self.r_addr), self.r_data.eq(rd.data)]
            return m
        return self._spram(m)

    def _spram(self, m):
        lanes = -(-self.width // SPRAM_WIDTH)
        banks = -(-self.depth // SPRAM_DEPTH)
        aw = len(self.w_addr)
        addr = Signal(aw)
        m.d.comb += addr.eq(Mux(self.w_en, self.w_addr, self.r_addr))
        low = Signal(14)
        m.d.comb += low.eq(addr[:min(aw, 14)])
        bank = addr[14:] if banks > 1 else Const(0, 1)
        read_bank = Signal(range(banks))          # bank of the last read (its data is on DATAOUT now)
        if banks > 1:
            with m.If(~self.w_en):
                m.d.sync += read_bank.eq(bank)
        data_in = Signal(lanes * SPRAM_WIDTH)
        m.d.comb += data_in.eq(self.w_data)
        outs = []
        for b in range(banks):
            out = Signal(lanes * SPRAM_WIDTH, name=f"bank{b}_out")
            outs.append(out)
            wren = self.w_en & (bank == b)
            for lane in range(lanes):
                m.submodules[f"spram_{b}_{lane}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=low, i_DATAIN=data_in[lane * SPRAM_WIDTH:(lane + 1) * SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4), i_WREN=wren, i_CHIPSELECT=Const(1), i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1),
                    o_DATAOUT=out[lane * SPRAM_WIDTH:(lane + 1) * SPRAM_WIDTH])
        selected = outs[0]
        for b in range(1, banks):
            selected = Mux(read_bank == b, outs[b], selected)
        m.d.comb += self.r_data.eq(selected[:self.width])
        return m
