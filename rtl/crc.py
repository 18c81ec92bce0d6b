"""CRC-16/CCITT-FALSE in RTL, one byte per cycle (``docs/protocol.md``; golden model ``sim.protocol.crc16``).

Polynomial ``x^16 + x^12 + x^5 + 1`` (0x1021), initial value 0xFFFF, data MSB first, no reflection, no final XOR.

Members
-------
crc16_next
    The CRC after one more byte, as a combinational Amaranth expression (an XOR network, unrolled bit loop).
CRC16
    A register that restarts on ``clear`` and absorbs ``data`` when ``en`` is high.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sim.wire import CRC_INIT, CRC_POLY

__all__ = ["crc16_next", "CRC16"]


def crc16_next(crc, byte):
    """Expression: CRC-16/CCITT-FALSE register ``crc`` (16 bits) after absorbing ``byte`` (8 bits, MSB first)."""
    bits = [crc[i] for i in range(16)]
    for i in range(7, -1, -1):
        feedback = bits[15] ^ byte[i]
        shifted = [0] + bits[:15]
        bits = [(shifted[j] ^ feedback) if (CRC_POLY >> j) & 1 else shifted[j] for j in range(16)]
    return Cat(*bits)


class CRC16(wiring.Component):
    """CRC-16/CCITT-FALSE accumulator.

    Latency: ``crc`` holds the CRC of every byte absorbed up to and including the previous cycle. ``clear``
    (priority) restarts at 0xFFFF; ``en`` absorbs ``data``. Arithmetic exactly ``sim.protocol.crc16_update``.

    Members
    -------
    clear : In(1)
    en : In(1)
    data : In(8)
    crc : Out(16)
    """

    def __init__(self):
        super().__init__({"clear": In(1), "en": In(1), "data": In(8), "crc": Out(16, init=CRC_INIT)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.crc.eq(CRC_INIT)
        with m.Elif(self.en):
            m.d.sync += self.crc.eq(crc16_next(self.crc, self.data))
        return m
