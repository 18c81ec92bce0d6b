"""Fast vectorised torch quantizers to a fixed-point format ``<WL, FL>`` (``docs/numerics.md`` §1, §1.1, §3).

These run on the host for every operand the training loop sends to the device, so they are the hot path: each is a
handful of in-place tensor operations and no Python loop. They follow :meth:`fxtrain.sim.fixedpoint.FixedFormat.to_raw`
exactly:

* ``"nearest"`` — nearest multiple of ``2**-FL``, ties toward minus infinity: ``raw = ceil(x * 2**FL - 1/2)``;
* ``"stochastic"`` — ``raw = floor(x * 2**FL + U)`` with ``U`` uniform in ``[0, 1)`` drawn from a
  :class:`torch.Generator`, i.e. rounds up with probability equal to the discarded fraction. It is evaluated as
  ``f = floor(y); raw = f + (U < y - f)`` with ``y = x * 2**FL``: ``y - f`` is exact in floating point, so the
  probability of rounding up is the fraction to within the resolution of ``U`` (``2**-24`` for float32 input,
  ``2**-53`` for float64), values already on the grid are never changed, and the same generator state gives the
  same output;
* then saturation to ``[min_raw, max_raw]``. ``+Inf``/``-Inf`` saturate to the largest/smallest value; NaN
  raises :class:`ValueError` (the device has no NaN).

Scaling by ``2**FL`` is exact in floating point, so for float32 input every result equals the contract's float64
result (checked against ``apytypes`` in ``tests/test_quantize.py``). float16 and bfloat16 inputs are computed in
float32 and give float32 results: half precision cannot hold ``x * 2**FL - 1/2`` or 16-bit raw values exactly
(float16 1025 at 16.0 would round to 1024, the largest 16.7 value 255.9921875 to 256), and its fraction
``y - f`` would make stochastic rounding biased at the resolution of a half-precision ``U``.

Members
-------
ROUNDING_MODES : tuple of str
    ``("nearest", "stochastic")`` (from :mod:`fxtrain.sim.rounding`).
check_mode
    A :class:`fxtrain.sim.rounding.RoundingMode` from itself or its name (:func:`~fxtrain.sim.rounding.parse_mode`).
quantize_raw
    Floats to raw integers, returned as a float tensor holding integers (cheapest for the GEMM that follows),
    plus optionally the saturation count.
to_raw
    Floats to raw integers as an integer tensor.
quantize
    Floats to the nearest representable floats (dequantized), same dtype as the input.
from_raw
    Raw integers to floats.
"""

from __future__ import annotations

import torch

from ..sim.fixedpoint import FixedFormat
from ..sim.rounding import ROUNDING_MODES, RoundingMode, parse_mode

__all__ = ["ROUNDING_MODES", "check_mode", "quantize_raw", "to_raw", "quantize", "from_raw"]

def check_mode(mode) -> RoundingMode:
    """The :class:`RoundingMode` of ``mode`` (itself, ``"nearest"`` or ``"stochastic"``); ValueError otherwise."""
    return parse_mode(mode)


def quantize_raw(x: torch.Tensor, fmt, mode="nearest", generator: "torch.Generator | None" = None,
                 *, count_saturated: bool = False):
    """Raw integers of ``x`` in ``fmt`` as a floating tensor (float32 for float32, float16 and bfloat16 input,
    float64 for float64: both hold every 16-bit raw value exactly).

    Parameters
    ----------
    x : torch.Tensor
        Floating-point input; not modified.
    fmt : FixedFormat or str
        Target format (``"16.8"`` or ``"<16,8>"`` accepted).
    mode : RoundingMode or str
        ``RoundingMode.NEAREST`` / ``"nearest"`` or ``RoundingMode.STOCHASTIC`` / ``"stochastic"``.
    generator : torch.Generator, optional
        Source of the uniform numbers for ``"stochastic"``; ``None`` uses torch's default generator.
    count_saturated : bool
        Also return the number of elements that saturated (costs one more pass).

    Returns
    -------
    torch.Tensor, or (torch.Tensor, int)

    Raises
    ------
    ValueError
        If ``x`` contains NaN, or the mode is unknown.
    TypeError
        If ``x`` is not a floating-point tensor.
    """
    fmt = FixedFormat.parse(fmt)
    mode = check_mode(mode)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"quantize_raw needs a floating-point torch tensor, not {type(x).__name__}"
                        f"{'' if not isinstance(x, torch.Tensor) else ' of ' + str(x.dtype)}")
    # A NaN makes the sum NaN (so does +Inf + -Inf: then the exact check below decides); one cheap pass.
    total = x.sum()
    if total != total and torch.isnan(x).any():
        raise ValueError(f"Cannot quantize NaN to fixed point {fmt} ({int(torch.isnan(x).sum())} NaN elements "
                         f"in a tensor of shape {tuple(x.shape)})")
    y = x.to(_compute_dtype(x.dtype)) * (2.0 ** fmt.fl)
    if mode is RoundingMode.NEAREST:
        y.sub_(0.5).ceil_()
    else:
        floor = torch.floor(y)
        y.sub_(floor)  # the exact discarded fraction in [0, 1); NaN for +-Inf, which never rounds up
        up = torch.rand(y.shape, generator=generator, dtype=y.dtype, device=y.device).lt_(y)
        y = floor.add_(up)
    if count_saturated:
        saturated = int(((y < fmt.min_raw) | (y > fmt.max_raw)).sum())
        return y.clamp_(fmt.min_raw, fmt.max_raw), saturated
    return y.clamp_(fmt.min_raw, fmt.max_raw)


def _compute_dtype(dtype):
    """At least float32: half-precision inputs are promoted (module docstring)."""
    return torch.promote_types(dtype, torch.float32)


def to_raw(x: torch.Tensor, fmt, mode="nearest", generator=None, dtype=torch.int64) -> torch.Tensor:
    """Raw integers of ``x`` in ``fmt`` as an integer tensor of ``dtype`` (see :func:`quantize_raw`)."""
    return quantize_raw(x, fmt, mode, generator).to(dtype)


def quantize(x: torch.Tensor, fmt, mode="nearest", generator=None) -> torch.Tensor:
    """``x`` rounded to the grid of ``fmt`` and saturated, as floats of ``x``'s dtype promoted to at least float32
    (half precision cannot hold every 16-bit fixed-point value; see :func:`quantize_raw`)."""
    fmt = FixedFormat.parse(fmt)
    return quantize_raw(x, fmt, mode, generator).mul_(fmt.resolution)


def from_raw(raw: torch.Tensor, fmt, dtype=torch.float32) -> torch.Tensor:
    """Values of raw integers ``raw`` in ``fmt`` (no range check: the device only returns in-range words)."""
    fmt = FixedFormat.parse(fmt)
    return raw.to(dtype) * fmt.resolution
