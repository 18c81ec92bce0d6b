"""Golden model of one multiply-accumulate processing element (``docs/numerics.md`` §5).

A PE multiplies signed ``WL``-bit operands exactly and sums the products in an accumulator of
``accumulator_width(wl, max_k) = 2*WL + ceil(log2(max_k))`` bits, which cannot overflow for ``K <= max_k``
products (``|a*b| <= 2**(2*WL-2)``). The accumulator is read out through the rounder (:mod:`.rounding`).

Members
-------
MAX_K_LOG2 : int
    Default ``log2`` of the largest K one output may accumulate (2**20 products).
accumulator_width
    Bits of the accumulator for a word length and maximum K.
check_operands
    Validates raw operand arrays against a word length.
pe_accumulate
    The exact sum of products of one PE.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_K_LOG2", "accumulator_width", "check_operands", "pe_accumulate"]

MAX_K_LOG2 = 20


def accumulator_width(wl, max_k=1 << MAX_K_LOG2):
    if not isinstance(max_k, int) or max_k < 1:
        raise ValueError(f"Maximum K must be a positive integer, not {max_k!r}")
    return 2 * wl + (max_k - 1).bit_length()


def check_operands(name, raw, wl):
    """Return ``raw`` as int64, raising ``ValueError`` naming the first element outside the ``wl``-bit range."""
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iu":
        raise ValueError(f"Operand {name} must hold raw integers, not {raw.dtype}")
    raw = raw.astype(np.int64)
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    bad = (raw < lo) | (raw > hi)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"Operand {name}{list(index)} = {int(raw[index])} does not fit in {wl} signed bits "
                         f"[{lo}, {hi}]")
    return raw


def pe_accumulate(a, b, wl, max_k=1 << MAX_K_LOG2):
    """Exact ``sum(a[k] * b[k])`` of one PE; ``len(a) > max_k`` raises ``ValueError``."""
    a = check_operands("a", a, wl)
    b = check_operands("b", b, wl)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"PE operands must be two vectors of equal length, not {a.shape} and {b.shape}")
    if len(a) > max_k:
        raise ValueError(f"K = {len(a)} exceeds the accumulator's maximum K {max_k}")
    return int(np.dot(a, b))
