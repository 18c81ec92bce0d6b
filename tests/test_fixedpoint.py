"""FixedFormat ``<WL, FL>`` (``fxtrain.sim.fixedpoint``) against ``docs/numerics.md`` §1 (format, conversion)
and §2 (spelling)."""

import math

import numpy as np
import pytest

from fxtrain.sim.fixedpoint import MAX_WL, FixedFormat

SEED = 1515


@pytest.mark.parametrize("wl,fl,error,message", [
    (1, 0, ValueError, "Word length must be at least 2, not 1"),
    (17, 8, ValueError, f"Word length must be at most {MAX_WL} \\(the multiplier width\\), not 17"),
    (16, -1, ValueError, "Fraction length must be non-negative, not -1"),
    (8, 9, ValueError, "Fraction length must be at most the word length 8, not 9"),
    (8.0, 4, TypeError, "Fixed-point wl must be an integer, not 8.0"),
    (8, True, TypeError, "Fixed-point fl must be an integer, not True"),
])
def test_validation_messages(wl, fl, error, message):
    """§1: invalid word/fraction lengths raise with a message naming the bad value."""
    with pytest.raises(error, match=message):
        FixedFormat(wl, fl)


@pytest.mark.parametrize("text", ["16.8", " 16 . 8 ", "<16,8>", "< 16 , 8 >"])
def test_parse_both_spellings(text):
    """§2: 'WL.FL' and '<WL,FL>' (spaces allowed) parse to the same format; str() is the canonical 'WL.FL'."""
    fmt = FixedFormat.parse(text)
    assert fmt == FixedFormat(16, 8) and str(fmt) == "16.8"
    assert FixedFormat.parse(fmt) is fmt


@pytest.mark.parametrize("text,error,message", [
    ("16,8", ValueError, "is not of the form 'WL.FL'"),
    ("<16.8>", ValueError, "is not of the form"),
    ("", ValueError, "is not of the form"),
    ("20.8", ValueError, "Word length must be at most"),
    ("8.9", ValueError, "Fraction length must be at most the word length 8, not 9"),
    (16, TypeError, "Fixed-point format must be a string like '16.8', not 16"),
])
def test_parse_errors(text, error, message):
    """§2: malformed spellings and invalid formats are rejected, naming the text."""
    with pytest.raises(error, match=message):
        FixedFormat.parse(text)


@pytest.mark.parametrize("wl,fl", [(16, 8), (8, 0), (8, 8), (2, 1), (16, 16), (12, 10)])
def test_ranges(wl, fl):
    """§1: IL = WL - FL, raw range [-2**(WL-1), 2**(WL-1)-1], value range [-2**(IL-1), 2**(IL-1) - 2**-FL]."""
    fmt = FixedFormat(wl, fl)
    assert fmt.il == wl - fl
    assert (fmt.min_raw, fmt.max_raw) == (-(1 << (wl - 1)), (1 << (wl - 1)) - 1)
    assert fmt.resolution == 2.0 ** -fl
    assert fmt.min_value == -(2.0 ** (fmt.il - 1))
    assert fmt.max_value == 2.0 ** (fmt.il - 1) - 2.0 ** -fl
    raw = np.arange(fmt.min_raw, fmt.max_raw + 1)
    assert np.array_equal(fmt.to_raw(fmt.from_raw(raw)), raw)


def test_nearest_ties_toward_minus_infinity():
    """§1.1: nearest rounding rounds to the closest step; an exact tie goes toward minus infinity."""
    fmt = FixedFormat(8, 4)
    q = fmt.resolution
    x = np.array([0.5 * q, -0.5 * q, 1.5 * q, -1.5 * q, 0.49 * q, 0.51 * q, -0.51 * q, 2.5 * q])
    assert fmt.to_raw(x).tolist() == [0, -1, 1, -2, 0, 1, -1, 2]


def test_saturation_and_infinities():
    """§1.1: values beyond the range, and ±Inf, saturate to max_raw / min_raw (after rounding); NaN raises."""
    fmt = FixedFormat(8, 4)
    x = np.array([1e9, -1e9, np.inf, -np.inf, fmt.max_value + 0.49 * fmt.resolution,
                  fmt.max_value + 0.5 * fmt.resolution, fmt.min_value - 0.5 * fmt.resolution,
                  fmt.min_value - 0.51 * fmt.resolution])
    assert fmt.to_raw(x).tolist() == [127, -128, 127, -128, 127, 127, -128, -128]
    assert fmt.to_raw(np.array([np.inf]), "stochastic", np.random.default_rng(SEED)).tolist() == [127]
    clamped, mask = fmt.saturate([200, -200, 5])
    assert clamped.tolist() == [127, -128, 5] and mask.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="Cannot convert NaN to fixed point"):
        fmt.to_raw(np.array([0.0, np.nan]))


def test_stochastic_conversion_floor_or_ceil_and_unbiased():
    """§1.1: stochastic conversion gives floor or floor + 1 with mean equal to the value (6 sigma bound); it
    needs an rng; unknown modes are rejected; from_raw rejects raw values out of range."""
    fmt = FixedFormat(16, 8)
    n, frac = 20000, 0.3
    x = np.full(n, (3 + frac) * fmt.resolution)
    print(f"seed={SEED}")
    raw = fmt.to_raw(x, "stochastic", np.random.default_rng(SEED))
    assert set(np.unique(raw)) == {3, 4}
    assert abs(raw.mean() - (3 + frac)) < 6 * math.sqrt(frac * (1 - frac) / n)
    with pytest.raises(ValueError, match="Stochastic rounding needs a numpy Generator passed as rng"):
        fmt.to_raw(x, "stochastic")
    with pytest.raises(ValueError, match="Rounding mode must be 'nearest' or 'stochastic', not 'up'"):
        fmt.to_raw(x, "up")
    with pytest.raises(ValueError, match=r"Raw value 32768 is outside format 16.8 range \[-32768, 32767\]"):
        fmt.from_raw([0, 32768])
