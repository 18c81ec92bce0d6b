"""The boards fxtrain builds bitstreams for: platform, default engine geometry, clocking and host link.

Each :class:`BoardTarget` names an ``amaranth-boards`` platform class, the engine configuration built by
default, the frequencies of its two clock domains (``sync``: the engine; ``uart``: the UART, whose clock sets the
bit period; both made from the board oscillator by :mod:`fxtrain.boards.top`), the UART baud rate, the USB-UART
bridge on the board and the UART resource the SoC's ``rx``/``tx`` connect to. The target is the one source of
these clocks: the build, the SoC's IDENTIFY payload and the time model (``host/platforms.py``) read them here.

A target's link is checked (:meth:`BoardTarget.check_link`) before anything is built: the bridge must make the
baud rate (:meth:`Bridge.check`) and the UART clock must make it (:func:`fxtrain.rtl.uart.uart_divisor`: at least
4 cycles per bit, within 2 %); either refusal names the baud rate and the other value.

Default geometries (each PE multiplies two ``wl``-bit operands in one hardware multiplier: an iCE40 SB_MAC16 or
an ECP5 MULT18X18D with its output register as the PE's product register, so a build uses ``rows * cols`` DSP
blocks); ``fxtrain build --list`` prints them with the multipliers used / available:

=================  =================  ===========  ========  ==========  ==========  ================================
name               device             DSP blocks   engine    sync clock  UART clock  UART
=================  =================  ===========  ========  ==========  ==========  ================================
icebreaker         iCE40UP5K-SG48     8 SB_MAC16   4 x 2     19.125 MHz  19.125 MHz  FT2232H channel B, 4.8 Mbaud
ulx3s-12f          LFE5U-12F-6BG381   28 MULT18    7 x 4     60 MHz      30 MHz      FT231X, 3 Mbaud
ulx3s-25f          LFE5U-25F-6BG381   28 MULT18    7 x 4     60 MHz      30 MHz      FT231X, 3 Mbaud
ulx3s-45f          LFE5U-45F-6BG381   72 MULT18    8 x 8     60 MHz      30 MHz      FT231X, 3 Mbaud
ulx3s-85f          LFE5U-85F-6BG381   156 MULT18   8 x 8     55 MHz      30 MHz      FT231X, 3 Mbaud
icesugar-pro       LFE5U-25F-6BG256   28 MULT18    7 x 4     60 MHz      30 MHz      DAPLink USB-UART, 1 Mbaud
=================  =================  ===========  ========  ==========  ==========  ================================

Why these numbers (measured builds in ``docs/boards.md``; a default is the largest array that built and
closed timing there, at the highest engine clock below the routed fmax that the PLL can make beside a UART
clock that makes the bridge's fastest rate):

* iCE40UP5K: 4 x 2 uses all 8 SB_MAC16 in about 4,900 of the 5,280 logic cells at ``wl = 16`` (4 x 2 has
  two rounders and LFSR lanes where 2 x 4 would have four, and does not place); engine fmax 19.7-21.7 MHz.
  The UP5K has one PLL, whose outputs are one frequency (and its half), so a separate UART clock is the PLL
  output and the engine clock that divided by an integer in the fabric. With the UART in its own 48 MHz domain
  (12 Mbaud, divisor 4, engine 48 / 3 = 16 MHz) the design closed timing before RUN_TILES (``docs/boards.md``),
  but with RUN_TILES it needs 5,384 of the 5,280 logic cells and does not place, so the default is the
  single-clock design, no clock crossing, at the fastest FT2232H rate that 4 cycles per bit of a closing engine
  clock make: 4.8 Mbaud (12 MHz / 2.5) from 19.125 MHz (PLL 12 * 51 / 32; 4.78 Mbaud, 0.4 % off), 5,218 logic
  cells, fmax 21.37 MHz (2026-12-01; it was 3 Mbaud at 18 MHz, 6 cycles per bit, until then). 6 Mbaud would
  need a 24 MHz engine clock, above its fmax. ``--clock 16 --uart-clock 48 --baud 12000000`` builds the 12 Mbaud
  variant once the device has room.
* ULX3S-12F: the 12F is the 25F die; 7 x 4 uses all 28 MULT18X18D. Tall rather than wide for the same reason
  as on the iCEBreaker (fewer rounders and lanes); it routes at 70.5 MHz. 60 MHz = 25 * 12 / 5 (65 MHz leaves
  8 % margin and was not built); the UART clock is 30 MHz (VCO 600 MHz / 20, 10 cycles per bit at the
  FT231X's 3 Mbaud): every
  ECP5 build is limited to about 66-78 MHz by the host link's response path (the result buffer's block RAM
  read port through the response multiplexer into the CRC, ``rtl/command.py``), not by the array.
* ULX3S-25F and iCESugar-Pro: the 12F's default on the same die (not built here).
* ULX3S-45F: 8 x 8 (64 of 72) routes at 66.51 MHz at a 100 MHz constraint (2026-12-01, with the rounder's
  registered shift decode; 76.2-83.4 MHz in earlier runs of a smaller design), critical path in the host link
  (the executor's argument checks -> the link memory's ``pidx`` -> ``res_row``), hence 60 MHz (the next PLL
  clocks, 62.5 and 65 MHz, leave 6 % and 2 % margin); 9 x 8 (all 72) was not built.
* ULX3S-85F: 8 x 8 (64 of 156), the largest array that routed on the part: 63.73 MHz at a 55 MHz constraint
  (met; 55 = 25 * 11 / 5, VCO 660 MHz, UART 660 / 22 = 30 MHz), 63.83 at 50, 59.73 at 60 (0.45 % short), all
  2026-12-01 (``docs/boards.md``). 12 x 12 (144 of 156, the issue's goal) did not route:
  router1 (1,813 s) and router2 (6 iterations, 18,680 wires still overused) did not converge, and neither did
  router2 for 11 x 11 or 10 x 10 at 60 MHz (10 x 10 stalled at about 4,000-6,000 overused wires): routing
  congestion, not timing, stops it. ``--rows 12 --cols 12`` builds the goal geometry for further attempts.

B memory depth (``EngineConfig.b_depth``; the weights stay resident there across calls, ``docs/engine.md``):

* iCE40UP5K: 32,768 entries of ``cols * wl = 32`` bits in all 4 SB_SPRAM256KA (2 banks of 2;
  ``rtl/operand_memory.py``; the block RAMs stay for A, the link and the result banks). Replayed LeNet step at
  batch 64 (``host/traffic.py``): 51.1 MB on the link with 512 entries, 35.8 MB with 16,384 (2 SPRAMs: every
  weight resident), 30.9 MB with 32,768 (also the 4096 x 16 activation gradient that is conv2's weight-gradient
  B, ``ceil(16/2) * 4096`` entries).
* ECP5: block RAM (DP16KD, 18 Kbit: 1024 x 18). 8,192 entries of ``cols * 16`` bits take
  ``ceil(16 * cols / 18) * 8`` DP16KD: 32 of the 12F/25F's 56 at 7 x 4, 64 of the 45F's 108 at 8 x 8 and 88 of the
  85F's 208 at 12 x 12 (estimates from the DP16KD geometry, not from builds).

Partial-sum memory (``EngineConfig.psum_slots``, ``docs/engine.md``): every ECP5 target holds LeNet's
weight-gradient tiles, ``ceil(150 / rows) * ceil(16 / cols)``, rounded up to fill the DP16KD depth
(:func:`ecp5_psum_slots`): 146 slots at 7 x 4 (88 needed), 64 at 8 x 8 (38), 42 at 12 x 12 (26); entries of
``cols * acc_width`` bits (52-bit accumulators) take ``ceil(cols * 52 / 36) * ceil(slots * rows / 512)``
DP16KD (:func:`ecp5_psum_dp16kd`): 12 at 7 x 4 (39 + 12 of the 12F's 56), 12 at 8 x 8, 18 at 12 x 12. The
iCEBreaker has none (``psum_slots = 0``): the UP5K has no logic cells left (5,260 of 5,280).

The DSP block counts are those of the Lattice data sheets (iCE40 UltraPlus family data sheet FPGA-DS-02008,
table 1.1; ECP5 family data sheet FPGA-DS-02012, table 1.1); nextpnr's utilisation report confirms them in
every build (:mod:`fxtrain.boards.build`).

Members
-------
BoardTarget
    One board: its platform and build defaults.
ROUTERS : tuple
    The nextpnr routers a target may name (``None``: nextpnr's default).
TARGETS : dict
    Board name to :class:`BoardTarget`.
get_target
    Look a board up by name; ``ValueError`` listing the known names otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.icesugar_pro import ICESugarProPlatform
from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform, ULX3S_45F_Platform,
                                   ULX3S_85F_Platform)

from ..sim.gemm import EngineConfig

__all__ = ["Bridge", "BRIDGES", "BoardTarget", "ROUTERS", "TARGETS", "get_target"]

ROUTERS = (None, "router1", "router2")
#: B memory entries of the ECP5 boards' defaults (module docstring)
ECP5_B_DEPTH = 8192


@dataclass(frozen=True)
class Bridge:
    """The USB-UART bridge of a board and the baud rates it makes.

    FTDI bridges (``ftdi=True``) divide a base clock, 12 MHz on the Hi-Speed FT2232H and 3 MHz on the Full-Speed
    FT231X, by ``n + k/8`` with ``n >= 2`` (or by exactly 1 or 1.5): 12, 8, then 6 Mbaud and below on the
    FT2232H; 3, 2, then 1.5 Mbaud and below on the FT231X (FTDI application note AN232B-05, "Configuring FT232R,
    FT2232 and FT232B baud rates"; FT2232H and FT231X data sheets: 12 and 3 Mbaud maximum). A rate is accepted
    when the nearest divisor makes it within :data:`fxtrain.rtl.uart.BAUD_TOLERANCE`. Other bridges are
    described by their maximum only.

    Members
    -------
    name : str
    max_baud : int
    ftdi : bool
    check
        ``ValueError`` naming the bridge, the baud rate and what the bridge makes instead.
    """

    name: str
    max_baud: int
    ftdi: bool = False

    def nearest(self, baud):
        """The rate closest to ``baud`` the bridge makes (``baud`` itself for a non-FTDI bridge within its
        maximum)."""
        if not self.ftdi:
            return min(baud, self.max_baud)
        candidates = [self.max_baud, self.max_baud * 2 // 3]
        eighths = max(16, round(8 * self.max_baud / baud))
        candidates += [8 * self.max_baud / m for m in (eighths, eighths + 1) if m <= 8 * 16383 + 7]
        return min(candidates, key=lambda rate: abs(rate - baud))

    def check(self, baud):
        from ..rtl.uart import BAUD_TOLERANCE

        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"Baud rate must be a positive integer, not {baud!r}")
        if baud > self.max_baud:
            raise ValueError(f"Baud rate {baud} is above the {self.max_baud} baud the board's {self.name} "
                             f"bridge can make")
        rate = self.nearest(baud)
        if abs(rate - baud) / baud > BAUD_TOLERANCE:
            raise ValueError(f"Baud rate {baud} cannot be made by the board's {self.name} bridge: its nearest rate "
                             f"is {rate:.0f} baud, {100 * abs(rate - baud) / baud:.2f} % off (tolerance "
                             f"{100 * BAUD_TOLERANCE:.1f} %)")


#: Bridges of the boards: FTDI FT2232H (Hi-Speed, iCEBreaker), FT231X (Full-Speed, ULX3S), and the iCESugar-Pro's
#: DAPLink USB-UART (an MCU; its divisor is not modelled, only the 1 Mbaud the board's documentation names).
BRIDGES = {"FT2232H": Bridge("FT2232H", 12_000_000, ftdi=True), "FT231X": Bridge("FT231X", 3_000_000, ftdi=True),
           "DAPLink": Bridge("DAPLink", 1_000_000)}


@dataclass(frozen=True)
class BoardTarget:
    """A board and the defaults of its build.

    Parameters
    ----------
    name : str
        Command-line name (``fxtrain build --board NAME``).
    platform : type
        ``amaranth-boards`` platform class.
    family : str
        ``"ice40"`` or ``"ecp5"`` (selects the toolchain and the PLL primitive).
    config : EngineConfig
        Engine built by default.
    clk_freq : int
        Frequency of the ``sync`` (engine) domain in Hz.
    baud : int
        UART baud rate.
    uart_freq : int
        Frequency of the ``uart`` domain in Hz (sets the UART divisor ``round(uart_freq / baud)``).
    bridge : Bridge
        The board's USB-UART bridge.
    uart : tuple of (str, int)
        ``platform.request`` name and number of the UART resource.
    description : str
        One line for listings.
    router : str or None
        nextpnr router (``"router1"`` or ``"router2"``) the build uses unless told otherwise; ``None``:
        nextpnr's default.

    Members
    -------
    device : str
        FPGA part (``platform.device``).
    osc_freq : int
        Board oscillator frequency in Hz (the platform's default clock).
    uart_divisor : int
        ``uart`` cycles per bit (:func:`fxtrain.rtl.uart.uart_divisor`; ``ValueError`` when not makeable).
    check_link
        Refuse a baud rate the bridge or the UART clock cannot make.
    with_options
        A copy with geometry, clocks or baud rate overridden.
    """

    name: str
    platform: type
    family: str
    config: EngineConfig
    clk_freq: int
    baud: int
    uart_freq: int
    bridge: Bridge
    uart: tuple = ("uart", 0)
    description: str = ""
    router: str | None = None

    def __post_init__(self):
        if self.family not in ("ice40", "ecp5"):
            raise ValueError(f"Board family must be 'ice40' or 'ecp5', not {self.family!r}")
        if not isinstance(self.config, EngineConfig):
            raise TypeError(f"Board config must be an EngineConfig, not {self.config!r}")
        self._check_b_memory()
        if self.router not in ROUTERS:
            raise ValueError(f"Router of board {self.name} must be one of {ROUTERS}, not {self.router!r}")
        if not isinstance(self.bridge, Bridge):
            raise TypeError(f"Board bridge must be a Bridge, not {self.bridge!r}")
        for label, value in (("Clock frequency", self.clk_freq), ("Baud rate", self.baud),
                             ("UART clock frequency", self.uart_freq)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{label} of board {self.name} must be a positive integer, not {value!r}")

    def _check_b_memory(self):
        """On iCE40 a B memory that goes to SPRAM must fit the UP5K's 4 SB_SPRAM256KA."""
        from ..rtl.operand_memory import ICE40UP5K_SPRAMS, memory_kind, spram_count

        cfg = self.config
        if memory_kind("auto", self.family, cfg.b_depth) != "spram":
            return
        used = spram_count(cfg.cols * cfg.wl, cfg.b_depth)
        if used > ICE40UP5K_SPRAMS:
            raise ValueError(f"B memory of board {self.name} (b_depth {cfg.b_depth} x {cfg.cols * cfg.wl} bits = "
                             f"cols {cfg.cols} x wl {cfg.wl}) needs {used} SB_SPRAM256KA; the iCE40UP5K has "
                             f"{ICE40UP5K_SPRAMS}")

    @property
    def device(self):
        return self.platform.device

    @property
    def osc_freq(self):
        platform = self.platform()
        return int(platform.default_clk_frequency)

    @property
    def uart_divisor(self):
        from ..rtl.uart import uart_divisor
        return uart_divisor(self.uart_freq, self.baud)

    def check_link(self):
        """Raise ``ValueError`` unless the bridge makes ``baud`` and the UART clock makes it (at least
        ``MIN_DIVISOR`` cycles per bit within ``BAUD_TOLERANCE``); each message names both values."""
        self.bridge.check(self.baud)
        try:
            self.uart_divisor
        except ValueError as error:
            raise ValueError(f"Board {self.name}: the {self.uart_freq / 1e6:g} MHz UART clock cannot make "
                             f"{self.baud} baud: {error}") from None

    def with_options(self, rows=None, cols=None, clk_freq=None, baud=None, wl=None, depth=None, max_k_log2=None,
                     router=None, uart_freq=None, b_depth=None, expander=None):
        """This target with the given fields replaced (``None`` keeps the default; ``expander``: the EXPAND
        walker on or off; a ``depth`` above the
        default ``b_depth`` raises ``b_depth`` to it, and on iCE40 a geometry whose B memory is wider gets the
        largest B depth whose SPRAMs fit, unless ``b_depth`` is given); the engine configuration is re-validated
        by :class:`~fxtrain.sim.gemm.EngineConfig`, the B memory against the part."""
        config = self.config
        if depth is not None and b_depth is None and isinstance(depth, int) and depth > config.b_depth:
            b_depth = depth
        changes = {k: v for k, v in (("rows", rows), ("cols", cols), ("wl", wl), ("depth", depth),
                                     ("max_k_log2", max_k_log2), ("b_depth", b_depth), ("expander", expander))
                   if v is not None}
        if changes:
            config = replace(config, **changes)
        if b_depth is None and self.family == "ice40":
            config = replace(config, b_depth=_ice40_b_depth(config))
        return replace(self, config=config,
                       clk_freq=self.clk_freq if clk_freq is None else clk_freq,
                       baud=self.baud if baud is None else baud,
                       uart_freq=self.uart_freq if uart_freq is None else uart_freq,
                       router=self.router if router is None else router)


def _ice40_b_depth(config):
    """The default B depth of an iCE40 geometry: the board's, halved until the B memory fits the UP5K's SPRAMs
    (a wider B after ``--cols``/``--wl`` takes more SPRAMs per bank), or ``depth`` (block RAM) when even one bank
    is too wide; never below ``depth``."""
    from ..rtl.operand_memory import ICE40UP5K_SPRAMS, spram_count

    b_depth = max(config.b_depth, config.depth)
    while b_depth > config.depth and spram_count(config.cols * config.wl, b_depth) > ICE40UP5K_SPRAMS:
        b_depth //= 2
    if spram_count(config.cols * config.wl, b_depth) > ICE40UP5K_SPRAMS:
        b_depth = config.depth
    return b_depth


#: Tiles of LeNet's largest weight-gradient GEMM (M = 150 = 6 * 5 * 5, N = 16 output channels): the partial-sum
#: memory of an ECP5 target holds at least ``ceil(150 / rows) * ceil(16 / cols)`` tiles, so the planner plays it
#: in one group (every operand chunk crosses the link once).
LENET_WGRAD_MN = (150, 16)
#: Entries of one DP16KD in its widest (36-bit, pseudo-dual-port) mode.
DP16KD_DEPTH_36 = 512


def ecp5_psum_slots(rows, cols):
    """``psum_slots`` of an ECP5 target: LeNet's weight-gradient tiles, rounded up to fill the DP16KD depth they
    take anyway (``psum_slots * rows`` entries in blocks of 512), so more slots would cost more blocks."""
    m, n = LENET_WGRAD_MN
    tiles = -(-m // rows) * -(-n // cols)
    blocks_deep = -(-tiles * rows // DP16KD_DEPTH_36)
    return blocks_deep * DP16KD_DEPTH_36 // rows


def ecp5_psum_dp16kd(config):
    """DP16KD blocks of the partial-sum memory, from the block geometry (an estimate; builds report the total):
    ``ceil(cols * acc_width / 36) * ceil(psum_slots * rows / 512)`` (0 without slots)."""
    if not config.psum_slots:
        return 0
    return -(-config.cols * config.acc_width // 36) * -(-config.psum_slots * config.rows // DP16KD_DEPTH_36)


def _ulx3s(variant, platform, rows, cols, clk_mhz):
    return BoardTarget(f"ulx3s-{variant}", platform, "ecp5",
                       EngineConfig(rows=rows, cols=cols, wl=16, depth=512, b_depth=ECP5_B_DEPTH, expander=True,
                                    psum_slots=ecp5_psum_slots(rows, cols)),
                       clk_mhz * 1_000_000, 3_000_000, 30_000_000, BRIDGES["FT231X"],
                       description=f"Radiona ULX3S with {platform.device}, 25 MHz oscillator, FT231X UART")


TARGETS = {t.name: t for t in (
    BoardTarget("icebreaker", ICEBreakerPlatform, "ice40",
                # K up to 2**16 (48-bit accumulators): with RUN_TILES and the SPRAM B memory the UP5K has no room for
                # the 52-bit ones of MAX_K_LOG2 = 20 (5,353 of 5,280 logic cells; 5,260 with 16, docs/boards.md);
                # LeNet's largest K at batch 64 is 36,864
                EngineConfig(rows=4, cols=2, wl=16, depth=512, b_depth=32768, max_k_log2=16),
                19_125_000, 4_800_000, 19_125_000, BRIDGES["FT2232H"],
                description="1BitSquared iCEBreaker, iCE40UP5K, 12 MHz oscillator, FT2232H UART"),
    _ulx3s("12f", ULX3S_12F_Platform, 7, 4, 60),
    _ulx3s("25f", ULX3S_25F_Platform, 7, 4, 60),
    _ulx3s("45f", ULX3S_45F_Platform, 8, 8, 60),
    _ulx3s("85f", ULX3S_85F_Platform, 8, 8, 55),
    BoardTarget("icesugar-pro", ICESugarProPlatform, "ecp5",
                EngineConfig(rows=7, cols=4, wl=16, depth=512, b_depth=ECP5_B_DEPTH, psum_slots=ecp5_psum_slots(7, 4)),
                60_000_000, 1_000_000, 30_000_000, BRIDGES["DAPLink"],
                description="Muse Lab iCESugar-Pro, LFE5U-25F, 25 MHz oscillator, DAPLink USB-UART"),
)}


def get_target(name):
    """The :class:`BoardTarget` called ``name``; ``ValueError`` naming the known boards otherwise."""
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown board {name!r}; known boards: {', '.join(TARGETS)}") from None
