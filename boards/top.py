"""Board top level: the ``sync`` clock domain (board oscillator or PLL) and the SoC on the UART pins.

``BoardTop(target)`` is what :func:`fxtrain.boards.build.build_bitstream` hands to the platform. It contains
only clocking and pin wiring; everything else is :class:`fxtrain.rtl.soc.AcceleratorSoC`.

Clocking
--------
When ``target.clk_freq`` equals the board oscillator, the ``sync`` domain is left to the platform
(``create_missing_domain``: the oscillator pin, plus on iCE40 the 15 us power-on reset delay the block RAMs
need). Otherwise a PLL makes it, and ``sync`` is held in reset until the PLL reports lock (synchronised with
:class:`amaranth.lib.cdc.ResetSynchronizer`):

* iCE40 (``SB_PLL40_PAD``, SIMPLE feedback, fed by the oscillator pad directly): ``f_pfd = f_in / (DIVR + 1)``
  in [10, 133] MHz, ``f_vco = f_pfd * (DIVF + 1)`` in [533, 1066] MHz, ``f_out = f_vco / 2**DIVQ`` with
  ``DIVQ`` 1..6 and ``f_out`` in [16, 275] MHz; ``FILTER_RANGE`` from ``f_pfd`` (iCE40 sysCLOCK PLL design
  and usage guide, FPGA-TN-02052; the same search and filter table as Project IceStorm's ``icepll``).
* ECP5 (``EHXPLLL``, feedback from ``CLKOP``): ``f_pfd = f_in / CLKI_DIV`` in [3.125, 400] MHz,
  ``f_out = f_pfd * CLKFB_DIV`` in [3.125, 400] MHz, ``f_vco = f_out * CLKOP_DIV`` in [400, 800] MHz
  (ECP5 sysCLOCK PLL/DLL design and usage guide, FPGA-TN-02200; the same limits as Project Trellis'
  ``ecppll``); among exact solutions the one with ``f_vco`` closest to 600 MHz is taken.

Only frequencies the PLL makes exactly (to the hertz) are accepted: the SoC's UART divisor and its IDENTIFY
payload use ``target.clk_freq``, so it must be the real clock. Any other request raises ``ValueError`` naming
the nearest frequencies the PLL can make. nextpnr derives the PLL output's timing constraint from these same
parameters, so a wrong solver would show up as a constraint mismatch in the build report.

Members
-------
Ice40PLLParams, Ecp5PLLParams
    Solved PLL dividers (``freq`` is the exact output frequency in Hz).
ice40_pll_params, ecp5_pll_params
    Solvers: exact output frequency from the oscillator, or ``ValueError``.
pll_params
    The solver of a target's family applied to its oscillator and ``clk_freq``; ``None`` when no PLL is needed.
BoardTop
    The top-level elaboratable.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from ..rtl.soc import AcceleratorSoC, identify_payload
from .targets import BoardTarget

__all__ = ["Ice40PLLParams", "Ecp5PLLParams", "ice40_pll_params", "ecp5_pll_params", "ClockPlan", "clock_plan",
           "pll_params", "BoardTop"]

MHZ = 1_000_000


@dataclass(frozen=True)
class Ice40PLLParams:
    """``SB_PLL40`` SIMPLE-feedback dividers: ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``."""
    divr: int
    divf: int
    divq: int
    filter_range: int
    freq: int


@dataclass(frozen=True)
class Ecp5PLLParams:
    """``EHXPLLL`` dividers with CLKOP feedback: ``f_out = f_in * CLKFB_DIV / CLKI_DIV``,
    ``f_vco = f_out * CLKOP_DIV``; the second output ``CLKOS`` makes ``f_vco / CLKOS_DIV`` (``clkos_div``;
    ``None`` when unused)."""
    clki_div: int
    clkfb_div: int
    clkop_div: int
    freq: int
    clkos_div: int | None = None

    @property
    def vco(self):
        return self.freq * self.clkop_div


def _check_freqs(f_in, f_out):
    for name, value in (("PLL input frequency", f_in), ("PLL output frequency", f_out)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer in Hz, not {value!r}")


def _no_exact(kind, f_in, f_out, reachable):
    below = max((f for f in reachable if f < f_out), default=None)
    above = min((f for f in reachable if f > f_out), default=None)
    nearest = " and ".join(f"{float(f) / MHZ:.6g} MHz" for f in (below, above) if f is not None)
    return ValueError(f"The {kind} PLL cannot make exactly {f_out / MHZ:.6g} MHz from {f_in / MHZ:.6g} MHz; "
                      f"nearest it can make: {nearest}")


def _ice40_filter_range(f_pfd):
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if f_pfd < limit * MHZ:
            return value
    return 6


def ice40_pll_params(f_in, f_out):
    """Dividers of an iCE40 ``SB_PLL40`` (SIMPLE feedback) making exactly ``f_out`` Hz from ``f_in`` Hz.

    Raises
    ------
    ValueError
        ``f_out`` outside [16, 275] MHz, or not exactly reachable (the message names the nearest reachable
        frequencies).
    """
    _check_freqs(f_in, f_out)
    if not 16 * MHZ <= f_out <= 275 * MHZ:
        raise ValueError(f"iCE40 PLL output must be from 16 to 275 MHz, not {f_out / MHZ:.6g} MHz")
    reachable, best = set(), None
    for divr in range(16):
        f_pfd = Fraction(f_in, divr + 1)
        if not 10 * MHZ <= f_pfd <= 133 * MHZ:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 * MHZ <= f_vco <= 1066 * MHZ:
                continue
            for divq in range(1, 7):
                f = f_vco / 2 ** divq
                if not 16 * MHZ <= f <= 275 * MHZ:
                    continue
                reachable.add(f)
                if f == f_out and best is None:
                    best = Ice40PLLParams(divr, divf, divq, _ice40_filter_range(f_pfd), f_out)
    if best is None:
        raise _no_exact("iCE40", f_in, f_out, reachable)
    return best


def ecp5_pll_params(f_in, f_out, f_os=None):
    """Dividers of an ECP5 ``EHXPLLL`` (CLKOP feedback) making exactly ``f_out`` Hz from ``f_in`` Hz, and, when
    ``f_os`` is given, exactly ``f_os`` Hz on ``CLKOS`` (``f_vco / CLKOS_DIV``, CLKOS_DIV 1..128).

    Raises
    ------
    ValueError
        ``f_out`` or ``f_os`` outside [3.125, 400] MHz, or not exactly reachable (the message names the nearest
        reachable frequencies, or both requested ones when no VCO makes the pair).
    """
    _check_freqs(f_in, f_out)
    if f_os is not None:
        _check_freqs(f_in, f_os)
        if not Fraction(3125, 1000) * MHZ <= f_os <= 400 * MHZ:
            raise ValueError(f"ECP5 PLL output must be from 3.125 to 400 MHz, not {f_os / MHZ:.6g} MHz")
    if not Fraction(3125, 1000) * MHZ <= f_out <= 400 * MHZ:
        raise ValueError(f"ECP5 PLL output must be from 3.125 to 400 MHz, not {f_out / MHZ:.6g} MHz")
    reachable, best = set(), None
    for clki_div in range(1, 129):
        f_pfd = Fraction(f_in, clki_div)
        if not Fraction(3125, 1000) * MHZ <= f_pfd <= 400 * MHZ:
            continue
        for clkfb_div in range(1, 81):
            f = f_pfd * clkfb_div
            if not Fraction(3125, 1000) * MHZ <= f <= 400 * MHZ:
                continue
            for clkop_div in range(1, 129):
                f_vco = f * clkop_div
                if not 400 * MHZ <= f_vco <= 800 * MHZ:
                    continue
                reachable.add(f)
                if f != f_out or (best is not None and abs(f_vco - 600 * MHZ) >= abs(best.vco - 600 * MHZ)):
                    continue
                if f_os is None:
                    best = Ecp5PLLParams(clki_div, clkfb_div, clkop_div, f_out)
                elif f_vco % f_os == 0 and 1 <= f_vco // f_os <= 128:
                    best = Ecp5PLLParams(clki_div, clkfb_div, clkop_div, f_out, int(f_vco // f_os))
    if best is None:
        if f_os is not None and f_out in reachable:
            raise ValueError(f"The ECP5 PLL cannot make {f_out / MHZ:.6g} MHz and {f_os / MHZ:.6g} MHz together "
                             f"from {f_in / MHZ:.6g} MHz: no VCO frequency (400-800 MHz) that makes the first is a "
                             f"multiple (1-128 times) of the second")
        raise _no_exact("ECP5", f_in, f_out, reachable)
    return best


@dataclass(frozen=True)
class ClockPlan:
    """How a board makes its two clock domains from its oscillator.

    Members
    -------
    pll : Ice40PLLParams or Ecp5PLLParams or None
        ``None``: both domains run on the oscillator.
    pll_domain : str or None
        iCE40: the domain on the PLL's output (the faster one); ECP5: ``"sync"`` on CLKOP (``uart`` on CLKOS).
    fabric_divider : int
        iCE40: the other domain's clock is the PLL output divided by this in the fabric (1: the same clock).
    """
    pll: object
    pll_domain: str | None
    fabric_divider: int = 1


def clock_plan(target):
    """The :class:`ClockPlan` of ``target`` (its ``clk_freq`` and ``uart_freq`` from its oscillator).

    Raises
    ------
    ValueError
        A frequency the part's PLL cannot make (naming the nearest ones it can), or, on iCE40, whose one PLL
        output makes one frequency, an engine and a UART clock of which the slower does not divide the faster
        (naming both).
    """
    if not isinstance(target, BoardTarget):
        raise TypeError(f"Target must be a BoardTarget, not {target!r}")
    osc, clk, uart = target.osc_freq, target.clk_freq, target.uart_freq
    if clk == uart == osc:
        return ClockPlan(None, None)
    if target.family == "ecp5":
        return ClockPlan(ecp5_pll_params(osc, clk, None if uart == clk else uart), "sync")
    fast, slow = max(clk, uart), min(clk, uart)
    if fast % slow:
        raise ValueError(f"Board {target.name}: the iCE40's one PLL makes one frequency, so the slower clock must "
                         f"divide the faster: engine clock {clk / MHZ:g} MHz and UART clock {uart / MHZ:g} MHz do "
                         f"not (ratio {fast / slow:.4g})")
    if fast == osc:
        raise ValueError(f"Board {target.name}: a clock divided from the {osc / MHZ:g} MHz oscillator without the "
                         f"PLL is not supported (engine clock {clk / MHZ:g} MHz, UART clock {uart / MHZ:g} MHz)")
    return ClockPlan(ice40_pll_params(osc, fast), "uart" if uart > clk else "sync", fast // slow)


def pll_params(target):
    """PLL dividers for ``target`` (``None`` when both its clocks are the oscillator's); see :func:`clock_plan`."""
    return clock_plan(target).pll


class BoardTop(Elaboratable):
    """Top level of one board: the ``sync`` and ``uart`` clock domains and
    :class:`~fxtrain.rtl.soc.AcceleratorSoC` on the UART pins.

    Parameters
    ----------
    target : BoardTarget
        Board, engine configuration, clock frequencies and baud rate.

    Latency: none of its own (pins are wired straight to the SoC's ``rx``/``tx`` through the platform's I/O
    buffers); no arithmetic.

    Members
    -------
    target : BoardTarget
    clocks : ClockPlan
        Solved at construction so a bad clock request fails before elaboration.
    pll : Ice40PLLParams or Ecp5PLLParams or None
        ``clocks.pll``.
    identity : fxtrain.sim.protocol.Identity
        What the built SoC answers to IDENTIFY (:func:`fxtrain.rtl.soc.identify_payload` of the target's
        configuration, engine clock and baud rate); the SoC itself is constructed at elaboration.
    """

    def __init__(self, target):
        if not isinstance(target, BoardTarget):
            raise TypeError(f"Target must be a BoardTarget, not {target!r}")
        self.target = target
        target.check_link()                                 # a baud rate the bridge or UART clock cannot make
        self.clocks = clock_plan(target)
        self.pll = self.clocks.pll
        self.identity = identify_payload(target.config, target.clk_freq, target.baud)

    def _ice40_pll(self, m, platform, clk_out, locked):
        pad = platform.request(platform.default_clk, dir="-")
        p = self.pll
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=Const(p.divr, 4), p_DIVF=Const(p.divf, 7), p_DIVQ=Const(p.divq, 3),
            p_FILTER_RANGE=Const(p.filter_range, 3),
            i_PACKAGEPIN=pad.io, i_RESETB=Const(1), i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)

    def _ecp5_pll(self, m, platform, clk_out, uart_out, locked):
        m.submodules.clk_in = clk_in = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        p = self.pll
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(self.target.osc_freq / MHZ),
            a_FREQUENCY_PIN_CLKOP=str(p.freq / MHZ),
            **({} if p.clkos_div is None else {"a_FREQUENCY_PIN_CLKOS": str(self.target.uart_freq / MHZ)}),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_CPHASE=p.clkop_div - 1, p_CLKOP_FPHASE=0,
            **({} if p.clkos_div is None else dict(
                p_CLKOS_DIV=p.clkos_div, p_CLKOS_ENABLE="ENABLED", p_CLKOS_CPHASE=p.clkos_div - 1, p_CLKOS_FPHASE=0,
                o_CLKOS=uart_out)),
            p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_in.i, i_CLKFB=clk_out, i_RST=Const(0), i_STDBY=Const(0),
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1), i_PHASESTEP=Const(1),
            i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0), i_ENCLKOS=Const(0),
            o_CLKOP=clk_out, o_LOCK=locked)

    def _clock_domains(self, m, platform):
        """Both domains from the PLL, each held in reset until it locks (:class:`ResetSynchronizer`)."""
        t = self.target
        freqs = {"sync": t.clk_freq, "uart": t.uart_freq}
        locked = Signal(name="pll_locked")
        clocks = {"sync": Signal(name="clk_engine"), "uart": Signal(name="clk_uart")}
        if t.clk_freq == t.uart_freq:               # one clock: the SoC has no uart domain
            del clocks["uart"]
        if t.family == "ecp5":
            self._ecp5_pll(m, platform, clocks["sync"], clocks.get("uart"), locked)
        elif len(clocks) == 1:
            self._ice40_pll(m, platform, clocks["sync"], locked)
        else:
            fast = self.clocks.pll_domain
            slow = "sync" if fast == "uart" else "uart"
            self._ice40_pll(m, platform, clocks[fast], locked)
            n = self.clocks.fabric_divider
            if n == 1:
                m.d.comb += clocks[slow].eq(clocks[fast])
            else:
                # The slower clock: a register of the faster domain, high for n // 2 of every n cycles (only
                # rising edges are used); reset-less so that it runs while the domains are held in reset.
                m.domains += ClockDomain("clkdiv", reset_less=True)
                m.d.comb += ClockSignal("clkdiv").eq(clocks[fast])
                count = Signal(range(n), reset_less=True)
                m.d.clkdiv += [count.eq(Mux(count == n - 1, 0, count + 1)), clocks[slow].eq(count < n // 2)]
        for name, clock in clocks.items():
            m.domains += ClockDomain(name)
            m.d.comb += ClockSignal(name).eq(clock)
            m.submodules[f"reset_sync_{name}"] = ResetSynchronizer(~locked, domain=name)
            platform.add_clock_constraint(clock, freqs[name])

    def elaborate(self, platform):
        if platform is None:
            raise ValueError("BoardTop needs the board's platform (it requests the clock and UART pins)")
        m = Module()
        t = self.target
        if self.pll is not None:
            self._clock_domains(m, platform)
        m.submodules.soc = soc = AcceleratorSoC(t.config, t.clk_freq, t.baud, uart_freq=t.uart_freq)
        if soc.identity != self.identity:
            raise AssertionError(f"SoC identity {soc.identity} differs from identify_payload {self.identity}")
        resource = platform.lookup(*t.uart)                 # some UARTs also have rts/dtr: left unused
        uart = platform.request(*t.uart, dir={sub.name: "-" for sub in resource.ios})
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [soc.rx.eq(rx.i), tx.o.eq(soc.tx)]
        return m
