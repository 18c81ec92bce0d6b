"""The PE's registered multiplier: ``p <= a * b`` (exact, signed), one register, in fabric or in an ECP5 DSP.

Two implementations of one contract, chosen by :func:`multiplier_kind` from the platform the design is
elaborated for (or forced by the ``kind`` argument):

``"generic"``
    Amaranth ``a * b`` into a flip-flop register. Simulation (Amaranth, Verilator, Icarus) and iCE40, where
    ``synth_ice40 -dsp`` maps the multiply to an SB_MAC16 and the register next to it.
``"mult18x18d"``
    An ECP5 ``MULT18X18D`` primitive with its output register enabled (``REG_OUTPUT_CLK = "CLK0"``): the
    register is inside the DSP block, so the route from the multiplier array to a fabric flip-flop leaves
    the register-to-register path (``docs/boards.md``, Timing). The input and pipeline registers are off,
    so the latency stays 1. Operands are sign-extended to 18 bits with ``SIGNEDA = SIGNEDB = 1``; ``p`` is
    the low ``2 * wl`` bits of the 36-bit product (exact: a ``wl x wl`` signed product fits ``2 * wl`` bits).
    The register has no reset (``RST0`` tied low): its first value is undefined on hardware, which the PE
    never observes because its ``valid`` register, reset to 0, gates every use of ``p``.

No simulator ships a model of ``MULT18X18D`` (Yosys' ``cells_bb.v`` is a black box), so the Verilog
benches simulate the primitive with :data:`fxtrain.sim.ecp5_models.MULT18X18D_MODEL`, a behavioural model
of the registered multiply that refuses parameter values it does not implement; the code under test is the
same ``Instance`` that goes into the bitstream.

Latency 1: ``p`` in cycle ``t + 1`` is ``a * b`` of cycle ``t``.

Members
-------
MULTIPLIER_KINDS
    ``("generic", "mult18x18d")``.
multiplier_kind
    The implementation for a platform (``"auto"`` resolution).
RegisteredMultiplier
    The component.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .platform_family import platform_family

__all__ = ["MULTIPLIER_KINDS", "multiplier_kind", "RegisteredMultiplier"]

MULTIPLIER_KINDS = ("generic", "mult18x18d")
_DSP_WIDTH = 18


def multiplier_kind(kind, platform):
    """``kind`` itself, or for ``"auto"``: ``"mult18x18d"`` on an ECP5 platform, ``"generic"`` otherwise (no
    platform, i.e. simulation, or iCE40)."""
    if kind == "auto":
        return "mult18x18d" if platform_family(platform) == "ecp5" else "generic"
    if kind not in MULTIPLIER_KINDS:
        raise ValueError(f"Multiplier kind must be 'auto' or one of {MULTIPLIER_KINDS}, not {kind!r}")
    return kind


class RegisteredMultiplier(wiring.Component):
    """``p <= a * b``, signed, exact, latency 1 (module docstring).

    Parameters
    ----------
    wl : int
        Operand width, 2 to 18.
    kind : str
        ``"auto"`` (from the platform at elaboration), ``"generic"`` or ``"mult18x18d"``.

    Members
    -------
    a, b : In(signed(wl))
    p : Out(signed(2 * wl))
        The product of the previous cycle's operands.
    latency : int
        1.
    """

    latency = 1

    def __init__(self, wl, kind="auto"):
        if isinstance(wl, bool) or not isinstance(wl, int) or not 2 <= wl <= _DSP_WIDTH:
            raise ValueError(f"Multiplier width must be an integer from 2 to {_DSP_WIDTH}, not {wl!r}")
        if kind != "auto":
            multiplier_kind(kind, None)         # validates
        self.wl, self.kind = wl, kind
        super().__init__({"a": In(signed(wl)), "b": In(signed(wl)), "p": Out(signed(2 * wl))})

    def elaborate(self, platform):
        m = Module()
        if multiplier_kind(self.kind, platform) == "generic":
            m.d.sync += self.p.eq(self.a * self.b)
            return m
        a18, b18, p36 = Signal(signed(_DSP_WIDTH)), Signal(signed(_DSP_WIDTH)), Signal(2 * _DSP_WIDTH)
        m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(p36[:2 * self.wl])]
        ports = {}
        for n in range(_DSP_WIDTH):
            ports[f"i_A{n}"], ports[f"i_B{n}"], ports[f"i_C{n}"] = a18[n], b18[n], Const(0)
        for n in range(2 * _DSP_WIDTH):
            ports[f"o_P{n}"] = p36[n]
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="NONE", p_REG_INPUTB_CLK="NONE", p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE", p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_CLK0_DIV="ENABLED", p_GSR="DISABLED", p_RESETMODE="SYNC", p_SOURCEB_MODE="B_SHIFT",
            p_MULT_BYPASS="DISABLED", p_CAS_MATCH_REG="FALSE", p_HIGHSPEED_CLK="NONE",
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            i_CLK0=ClockSignal("sync"), i_CE0=Const(1), i_RST0=Const(0),
            **ports)
        return m
