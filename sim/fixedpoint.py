"""Fixed-point number format ``<WL, FL>`` (Gupta et al. 2015), the root of the fxtrain arithmetic contract.

A format ``<WL, FL>`` stores a value as a WL-bit two's complement integer ``q`` (the *raw* value) and means
``q * 2**-FL``. ``IL = WL - FL`` is the number of integer bits, sign included, so the representable range is
``[-2**(IL-1), 2**(IL-1) - 2**-FL]`` in steps of ``2**-FL``. See ``docs/numerics.md`` §1.

Spelling (used by the CLI and configuration files, §1.2):

* ``"16.8"`` — ``WL.FL``, the canonical form written by :meth:`FixedFormat.__str__`;
* ``"<16,8>"`` — the notation of the paper (spaces allowed).

Members
-------
MAX_WL : int
    Largest word length the multiplier of the RTL supports (16: one iCE40 SB_MAC16 / one ECP5 MULT18X18D).
FixedFormat
    The format itself: validation, range, conversion between float and raw integers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .rounding import RoundingMode, parse_mode

__all__ = ["MAX_WL", "FixedFormat"]

MAX_WL = 16

_DOTTED = re.compile(r"^\s*(\d+)\s*\.\s*(\d+)\s*$")
_ANGLED = re.compile(r"^\s*<\s*(\d+)\s*,\s*(\d+)\s*>\s*$")


@dataclass(frozen=True)
class FixedFormat:
    """Two's complement fixed-point format ``<wl, fl>``.

    Parameters
    ----------
    wl : int
        Word length in bits, sign included: ``2 <= wl <= MAX_WL``.
    fl : int
        Fraction length in bits: ``0 <= fl <= wl``.

    Raises
    ------
    ValueError
        If ``wl`` or ``fl`` is out of range; the message names the offending value.

    Members
    -------
    il : int
        Integer bits, sign included (``wl - fl``).
    min_raw, max_raw : int
        Raw integer range ``[-2**(wl-1), 2**(wl-1) - 1]``.
    resolution : float
        ``2**-fl``, the value of one least significant bit.
    min_value, max_value : float
        Value range ``[-2**(il-1), 2**(il-1) - 2**-fl]``.
    """

    wl: int
    fl: int

    def __post_init__(self):
        for name in ("wl", "fl"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"Fixed-point {name} must be an integer, not {value!r}")
        if self.wl < 2:
            raise ValueError(f"Word length must be at least 2, not {self.wl}")
        if self.wl > MAX_WL:
            raise ValueError(f"Word length must be at most {MAX_WL} (the multiplier width), not {self.wl}")
        if self.fl < 0:
            raise ValueError(f"Fraction length must be non-negative, not {self.fl}")
        if self.fl > self.wl:
            raise ValueError(f"Fraction length must be at most the word length {self.wl}, not {self.fl}")
        object.__setattr__(self, "wl", int(self.wl))
        object.__setattr__(self, "fl", int(self.fl))

    @classmethod
    def parse(cls, text: "str | FixedFormat") -> "FixedFormat":
        """Parse ``"WL.FL"`` or ``"<WL,FL>"``; a :class:`FixedFormat` is returned unchanged.

        Raises
        ------
        ValueError
            If ``text`` is neither spelling, or names an invalid format.
        """
        if isinstance(text, FixedFormat):
            return text
        if not isinstance(text, str):
            raise TypeError(f"Fixed-point format must be a string like '16.8', not {text!r}")
        match = _DOTTED.match(text) or _ANGLED.match(text)
        if match is None:
            raise ValueError(f"Fixed-point format {text!r} is not of the form 'WL.FL' (e.g. '16.8') or '<WL,FL>'")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.wl}.{self.fl}"

    @property
    def il(self) -> int:
        return self.wl - self.fl

    @property
    def min_raw(self) -> int:
        return -(1 << (self.wl - 1))

    @property
    def max_raw(self) -> int:
        return (1 << (self.wl - 1)) - 1

    @property
    def resolution(self) -> float:
        return 2.0 ** -self.fl

    @property
    def min_value(self) -> float:
        return self.min_raw * self.resolution

    @property
    def max_value(self) -> float:
        return self.max_raw * self.resolution

    def saturate(self, raw):
        """Clamp raw integers to ``[min_raw, max_raw]``; returns ``(clamped, saturated_mask)``."""
        raw = np.asarray(raw, dtype=np.int64)
        clamped = np.clip(raw, self.min_raw, self.max_raw)
        return clamped, clamped != raw

    def to_raw(self, x, mode: "RoundingMode | str" = "nearest", rng: "np.random.Generator | None" = None):
        """Convert floats to raw integers with rounding then saturation (§3 of the contract).

        ``mode="nearest"`` rounds to the nearest multiple of ``2**-fl``, ties toward minus infinity (the paper's
        rule, Eq. 1); ``mode="stochastic"`` rounds up with probability equal to the discarded fraction, drawing
        uniform numbers from ``rng`` (required). Infinities saturate; NaN raises ``ValueError``.
        """
        mode = parse_mode(mode)
        x = np.asarray(x, dtype=np.float64)
        if np.isnan(x).any():
            raise ValueError("Cannot convert NaN to fixed point")
        scaled = np.clip(x * 2.0 ** self.fl, self.min_raw - 1.0, self.max_raw + 1.0)
        if mode is RoundingMode.NEAREST:
            raw = np.ceil(scaled - 0.5)
        else:
            if rng is None:
                raise ValueError("Stochastic rounding needs a numpy Generator passed as rng")
            raw = np.floor(scaled + rng.random(scaled.shape))
        return self.saturate(raw.astype(np.int64))[0]

    def from_raw(self, raw):
        """Values (float64) of raw integers; raises ``ValueError`` naming the first raw value out of range."""
        raw = np.asarray(raw, dtype=np.int64)
        bad = (raw < self.min_raw) | (raw > self.max_raw)
        if bad.any():
            raise ValueError(f"Raw value {int(raw[bad].flat[0])} is outside format {self} "
                             f"range [{self.min_raw}, {self.max_raw}]")
        return raw.astype(np.float64) * self.resolution
