"""Golden model of the rounder: wide accumulator to ``<WL, FL>`` word (``docs/numerics.md`` §3 and §5).

The rounder takes a signed accumulator value ``acc``, a shift ``s`` (the number of fraction bits it discards),
the rounding mode and a random word ``rand`` from its LFSR lane, and returns::

    offset = rand mod 2**s              (stochastic)
           = 2**(s-1) - 1 if s > 0 else 0 (nearest, ties toward minus infinity)
    out    = sat_WL(floor((acc + offset) / 2**s))
    sat    = out != floor((acc + offset) / 2**s)

where ``sat_WL`` clamps to ``[-2**(WL-1), 2**(WL-1) - 1]``.

Members
-------
RoundingMode
    ``NEAREST`` (0) and ``STOCHASTIC`` (1): the encoding used by the RTL registers and the host protocol, and the
    one rounding-mode type of the project (host quantizers, layers, backends); ``str()`` gives the lower-case
    name that the CLI and the configs use.
ROUNDING_MODES : tuple of str
    ``("nearest", "stochastic")``, the names :func:`parse_mode` accepts.
SHIFT_MAX : int
    Largest shift the rounder supports (32, the lane width).
parse_mode
    Accepts a :class:`RoundingMode`, its value, or the names ``"nearest"`` / ``"stochastic"``.
check_shift
    Validates a shift.
rounding_offset
    The ``offset`` above.
round_shift
    The whole rounder: ``(out, sat)``.
"""

from __future__ import annotations

import enum

import numpy as np

from .lfsr import LANE_WIDTH

__all__ = ["RoundingMode", "ROUNDING_MODES", "SHIFT_MAX", "parse_mode", "check_shift", "rounding_offset", "round_shift"]

SHIFT_MAX = LANE_WIDTH


class RoundingMode(enum.IntEnum):
    NEAREST = 0
    STOCHASTIC = 1

    def __str__(self):
        return self.name.lower()

    def __format__(self, spec):
        return format(str(self), spec)


ROUNDING_MODES = tuple(str(mode) for mode in RoundingMode)


def parse_mode(mode) -> RoundingMode:
    """A :class:`RoundingMode` from itself, its integer value, or its lower-case name."""
    if isinstance(mode, RoundingMode):
        return mode
    if isinstance(mode, str):
        try:
            return RoundingMode[mode.strip().upper()]
        except KeyError:
            pass
    elif isinstance(mode, (int, np.integer)) and int(mode) in (0, 1):
        return RoundingMode(int(mode))
    raise ValueError(f"Rounding mode must be 'nearest' or 'stochastic', not {mode!r}")


def check_shift(shift):
    if not isinstance(shift, (int, np.integer)) or not 0 <= shift <= SHIFT_MAX:
        raise ValueError(f"Shift must be an integer from 0 to {SHIFT_MAX}, not {shift!r}")
    return int(shift)


def rounding_offset(shift, mode, rand=None):
    """The value added to the accumulator before the arithmetic right shift by ``shift``."""
    shift = check_shift(shift)
    mode = parse_mode(mode)
    if mode is RoundingMode.NEAREST:
        return np.int64((1 << (shift - 1)) - 1 if shift > 0 else 0)
    if rand is None:
        raise ValueError("Stochastic rounding needs random words")
    rand = np.asarray(rand, dtype=np.uint64)
    return (rand & np.uint64((1 << shift) - 1)).astype(np.int64)


def round_shift(acc, shift, mode, rand, wl):
    """Round accumulators ``acc`` (int64 array) to ``wl``-bit words; returns ``(out, sat)`` as int64 and bool."""
    acc = np.asarray(acc, dtype=np.int64)
    shifted = (acc + rounding_offset(shift, mode, rand)) >> np.int64(check_shift(shift))
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    out = np.clip(shifted, lo, hi)
    return out, out != shifted
