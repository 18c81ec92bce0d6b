"""Board facts the time model needs: engine configuration per format, clock, multiplier widths and link timing.

Members
-------
MULTIPLIER_WIDTH : dict
    Signed operand width of one hardware multiplier per FPGA family (iCE40 SB_MAC16: 16, ECP5 MULT18X18D: 18).
PACKED_WL : dict
    Largest word length at which one DSP block could compute two products per cycle (a what-if, not in the RTL).
BITS_PER_UART_BYTE : int
    10 (8N1).
LinkTiming
    Seconds per byte in each direction and per exchange.
Platform
    What runs the GEMMs: engine configuration, clock, link.
DEFAULT_EXCHANGE_S : float
    Assumed fixed latency of one exchange on a board.
board_platform
    The :class:`Platform` of a board (``fxtrain.boards.targets``) running a number format.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..sim.fixedpoint import MAX_WL, FixedFormat
from ..sim.gemm import EngineConfig
from ..sim.payloads import DEFAULT_RX_BUFFER

__all__ = ["MULTIPLIER_WIDTH", "PACKED_WL", "BITS_PER_UART_BYTE", "LinkTiming", "Platform", "DEFAULT_EXCHANGE_S",
           "board_platform"]

#: Signed operand bits of one hardware multiplier: iCE40 SB_MAC16 is 16 x 16, ECP5 MULT18X18D is 18 x 18.
MULTIPLIER_WIDTH = {"ice40": 16, "ecp5": 18}

#: What-if (NOT implemented by the RTL, which does one product per DSP block per cycle): an SB_MAC16 can be
#: configured as two independent 8 x 8 multipliers, a MULT18X18D as two MULT9X9D, so at WL <= 8 (iCE40) or
#: WL <= 9 (ECP5) the same DSP blocks could hold twice as many PEs.
PACKED_WL = {"ice40": 8, "ecp5": 9}

BITS_PER_UART_BYTE = 10     # 8N1: start bit, 8 data bits, stop bit


@dataclass(frozen=True)
class LinkTiming:
    """Seconds per byte in each direction and fixed seconds per request/response exchange.

    Parameters
    ----------
    down_byte_s : float
        Host to device, per byte (``10 / baud`` for a UART at ``baud``).
    up_byte_s : float
        Device to host, per byte (``10 * divisor / uart_freq``: the device's UART transmitter, clocked by the
        board's UART clock; ``divisor = round(uart_freq / baud)``).
    exchange_s : float
        Fixed latency of one exchange beyond its bytes: USB scheduling, the USB-UART bridge's latency timer and
        the host OS (an assumption for boards, not measured here: no board is attached to this machine).
    """

    down_byte_s: float
    up_byte_s: float
    exchange_s: float = 0.0


@dataclass(frozen=True)
class Platform:
    """What runs the GEMMs.

    Parameters
    ----------
    name : str
    family : str
        ``"ice40"`` or ``"ecp5"``.
    config : EngineConfig
    clk_freq : int
        Engine clock in Hz.
    link : LinkTiming
    packed : bool
        What-if (not in the RTL): two products per DSP block, i.e. ``rows x 2*cols`` PEs on the same blocks.
    rx_buffer : int
        Request bytes the device buffers (``docs/protocol.md`` §2.2); 0: the driver waits for every answer.
    tile_loop : bool
        The device walks the column tiles itself (RUN_TILES, protocol version 2; default). ``False``: the
        per-tile RUN / READ_RESULT schedule of version 1 (for before/after comparisons).
    expander_whatif : bool
        ``config.expander`` was set against the board target's (a what-if: ``board_platform(expander=...)``).
    psum_whatif : bool
        ``config.psum_slots`` was set against the board target's (a what-if: ``board_platform(psum_slots=...)``).

    Members
    -------
    pipelined : bool
        ``rx_buffer > 0``.
    """

    name: str
    family: str
    config: EngineConfig
    clk_freq: int
    link: LinkTiming
    packed: bool = False
    rx_buffer: int = DEFAULT_RX_BUFFER
    tile_loop: bool = True
    expander_whatif: bool = False
    psum_whatif: bool = False

    @property
    def pipelined(self):
        return self.rx_buffer > 0


#: Default fixed latency per exchange on a board: a full-speed USB-UART bridge answers within about one 1 ms USB
#: frame when its latency timer is set to 1 ms (FTDI default: 16 ms). An assumption, overridable on the CLI.
DEFAULT_EXCHANGE_S = 1e-3


def board_platform(name, fmt, *, exchange_s=DEFAULT_EXCHANGE_S, packed=False, expander=None, psum_slots=None):
    """The :class:`Platform` of board ``name`` (``fxtrain.boards.targets``) running format ``fmt``.

    The engine configuration is the board's with ``wl`` set to the format's word length. ``expander``: None
    keeps the board's (``EngineConfig.expander``: convolution mode); True/False overrides it, a what-if when it
    differs from the board's (``Platform.expander_whatif``). ``psum_slots``: None keeps the board's partial-sum
    slots (``EngineConfig.psum_slots``); an integer overrides it, a what-if when it differs
    (``Platform.psum_whatif``). Raises ``ValueError``
    naming the value for an unknown board, a malformed format, a word length above ``MAX_WL`` or above the
    board's multiplier width, or ``packed`` at a word length the DSP blocks cannot split.
    """
    from ..boards.targets import get_target

    fmt = FixedFormat.parse(fmt)
    target = get_target(name)
    width = min(MULTIPLIER_WIDTH[target.family], MAX_WL)
    if fmt.wl > width:
        raise ValueError(f"Format {fmt} has WL {fmt.wl}, above the {width}-bit multipliers of board {name}")
    config = replace(target.config, wl=fmt.wl)
    whatif = expander is not None and bool(expander) != config.expander
    if expander is not None:
        config = replace(config, expander=bool(expander))
    psum_whatif = psum_slots is not None and psum_slots != config.psum_slots
    if psum_slots is not None:
        config = replace(config, psum_slots=psum_slots)      # EngineConfig checks the value
    if packed:
        if fmt.wl > PACKED_WL[target.family]:
            raise ValueError(f"Format {fmt}: two products per DSP block need WL <= {PACKED_WL[target.family]} "
                             f"on {target.family} (board {name}), not {fmt.wl}")
        config = replace(config, cols=2 * config.cols)
    link = LinkTiming(BITS_PER_UART_BYTE / target.baud, BITS_PER_UART_BYTE * target.uart_divisor / target.uart_freq,
                      float(exchange_s))
    return Platform(name, target.family, config, target.clk_freq, link, bool(packed), expander_whatif=whatif,
                    psum_whatif=psum_whatif)
