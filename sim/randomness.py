"""Statistical acceptance checks for lane words and stochastic rounding (``docs/numerics.md`` §3, §4).

Both checks return a :class:`CheckResult` instead of asserting, so tests can also assert that a check *fails*
on a generator or rounding mode known to be bad (a one-step LFSR, round-to-nearest).

Members
-------
CheckResult
    ``(statistic, bound, passed)``.
lag1_correlation
    Pearson correlation of consecutive words, against ``z / sqrt(n)``.
rounding_bias
    Mean rounding error of a constant value, against ``z * sqrt(f (1 - f) / n)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["CheckResult", "lag1_correlation", "rounding_bias"]


class CheckResult(NamedTuple):
    statistic: float
    bound: float
    passed: bool


def lag1_correlation(words, z=6.0):
    """Correlation of ``words[i]`` with ``words[i + 1]`` (as numbers) and its acceptance bound.

    For independent words the sample correlation of ``n`` pairs has standard deviation ``1 / sqrt(n)``; the check
    passes when ``|r| < z / sqrt(n)`` (``z = 6``: a false alarm about once in 10**9 runs). A one-bit-step LFSR
    (``x' = 2 x mod 2**N`` plus one bit) has ``r`` close to 0.5 and fails for any ``n`` above a few hundred.
    """
    x = np.asarray(words, dtype=np.float64)
    if x.ndim != 1 or len(x) < 3:
        raise ValueError(f"Need a vector of at least 3 words, not shape {x.shape}")
    n = len(x) - 1
    r = float(np.corrcoef(x[:-1], x[1:])[0, 1])
    bound = z / math.sqrt(n)
    return CheckResult(r, bound, abs(r) < bound)


def rounding_bias(outputs, acc, shift, z=6.0):
    """Mean error, in result ulps, of ``outputs``: roundings of the constant ``acc / 2**shift``.

    An unbiased stochastic rounding gives ``floor`` or ``floor + 1`` with probability ``1 - f``, ``f``
    (``f = (acc mod 2**shift) / 2**shift``), so its error has mean 0 and standard deviation ``sqrt(f (1 - f))``;
    the check passes when ``|mean error| < z * sqrt(f (1 - f) / n)``. Round-to-nearest has the deterministic
    error ``round(x) - x`` (``|.| = min(f, 1 - f)``) and fails once ``n`` is large enough to resolve it.
    The fraction must be strictly between 0 and 1 (otherwise every mode is exact and the check is empty).
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    f = (acc % (1 << shift)) / (1 << shift)
    if not 0 < f < 1:
        raise ValueError(f"acc = {acc} has no fractional part at shift {shift}; the bias check needs one")
    n = len(outputs)
    if n < 1:
        raise ValueError("Need at least one rounded output")
    mean_error = float(np.mean(outputs - acc / (1 << shift)))
    bound = z * math.sqrt(f * (1 - f) / n)
    return CheckResult(mean_error, bound, abs(mean_error) < bound)
