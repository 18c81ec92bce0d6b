"""Fast vectorised torch quantizers to a fixed-point format ``<WL, FL>`` (``docs/numerics.md`` §1, §1.1, §3).

These run on the host for every operand the training loop sends to the device, so they are the hot path: each is
one fused compiled pass (:func:`fxtrain.host.kernels.quantize_into`: scale, offset, floor, saturate, count, write)
with no temporaries. They follow :meth:`fxtrain.sim.fixedpoint.FixedFormat.to_raw` exactly:

* ``"nearest"`` — nearest multiple of ``2**-FL``, ties toward minus infinity: ``raw = ceil(x * 2**FL - 1/2)``;
* ``"stochastic"`` — ``raw = floor(x * 2**FL + U)`` with ``U`` uniform in ``[0, 1)``, i.e. rounds up with
  probability equal to the discarded fraction. It is evaluated as ``f = floor(y); raw = f + (U < y - f)`` with
  ``y = x * 2**FL`` in float64: ``y - f`` is exact, so the probability of rounding up is the fraction to within
  the resolution of ``U`` (``2**-53``), values already on the grid are never changed. ``U`` comes from a
  counter-based generator (splitmix64 of element index and a 64-bit key, :mod:`fxtrain.host.kernels`) whose key
  is drawn from a :class:`torch.Generator`, so the same generator state gives the same output, whatever the
  number of threads;
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
    Floats to the nearest representable floats (dequantized), dtype of the input promoted to at least float32.
from_raw
    Raw integers to floats.
"""

from __future__ import annotations

import torch

from . import kernels
from ..sim.fixedpoint import FixedFormat
from ..sim.rounding import ROUNDING_MODES, RoundingMode, parse_mode

__all__ = ["ROUNDING_MODES", "check_mode", "quantize_raw", "to_raw", "quantize", "from_raw"]

def check_mode(mode) -> RoundingMode:
    """The :class:`RoundingMode` of ``mode`` (itself, ``"nearest"`` or ``"stochastic"``); ValueError otherwise."""
    return parse_mode(mode)


def quantize_raw(x: torch.Tensor, fmt, mode="nearest", generator: "torch.Generator | None" = None,
                 *, count_saturated: bool = False, out: "torch.Tensor | None" = None, dtype=None):
    """Raw integers of ``x`` in ``fmt`` as a floating tensor (float32 for float32, float16 and bfloat16 input,
    float64 for float64, unless ``dtype`` says otherwise: both hold every 16-bit raw value exactly).

    Parameters
    ----------
    x : torch.Tensor
        Floating-point input; not modified.
    fmt : FixedFormat or str
        Target format (``"16.8"`` or ``"<16,8>"`` accepted).
    mode : RoundingMode or str
        ``RoundingMode.NEAREST`` / ``"nearest"`` or ``RoundingMode.STOCHASTIC`` / ``"stochastic"``.
    generator : torch.Generator, optional
        Source of the key of the uniform numbers for ``"stochastic"`` (one draw per call); ``None`` uses
        torch's default generator.
    count_saturated : bool
        Also return the number of elements that saturated (counted in the same pass).
    out : torch.Tensor, optional
        Contiguous float32/float64 tensor of ``x``'s shape to write into (``x`` itself is allowed; it is then
        overwritten even if a NaN makes the call raise); saves allocating, and page-faulting in, a new tensor.
    dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64`` for a newly allocated result (default: ``x``'s), e.g. float64 raw
        operands for the emulators' exact float64 GEMM without a conversion pass.

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
    out, saturated = _quantize(x, fmt, mode, generator, 1.0, out, dtype)
    return (out, saturated) if count_saturated else out


def _quantize(x, fmt, mode, generator, out_scale, out=None, dtype=None):
    """One fused pass of :func:`fxtrain.host.kernels.quantize_into` over ``x``: ``(values, saturated count)``;
    ValueError for NaN."""
    if x.dtype not in (torch.float32, torch.float64) or x.device.type != "cpu":
        x = x.to(device="cpu", dtype=_compute_dtype(x.dtype))
    src = x.detach().contiguous()
    if dtype not in (None, torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, not {dtype!r}")
    if out is None:
        out = torch.empty(src.shape, dtype=dtype or src.dtype)
    elif (not isinstance(out, torch.Tensor) or out.shape != src.shape or out.dtype not in (torch.float32, torch.float64)
          or not out.is_contiguous() or out.device.type != "cpu"):
        raise ValueError(f"out must be a contiguous float32/float64 CPU tensor of shape {tuple(src.shape)}, "
                         f"not {type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}")
    stochastic = mode is RoundingMode.STOCHASTIC
    key = kernels.draw_key(generator) if stochastic else 0
    saturated, nans = kernels.quantize_into(src.view(-1).numpy(), out.view(-1).numpy(), fmt.fl, fmt.min_raw,
                                            fmt.max_raw, out_scale, stochastic, key)
    if nans:
        raise ValueError(f"Cannot quantize NaN to fixed point {fmt} ({int(nans)} NaN elements in a tensor of "
                         f"shape {tuple(x.shape)})")
    return out, int(saturated)


def _compute_dtype(dtype):
    """At least float32: half-precision inputs are promoted (module docstring)."""
    return torch.promote_types(dtype, torch.float32)


def to_raw(x: torch.Tensor, fmt, mode="nearest", generator=None, dtype=torch.int64) -> torch.Tensor:
    """Raw integers of ``x`` in ``fmt`` as an integer tensor of ``dtype`` (see :func:`quantize_raw`)."""
    return quantize_raw(x, fmt, mode, generator).to(dtype)


def quantize(x: torch.Tensor, fmt, mode="nearest", generator=None, *, count_saturated: bool = False, out=None):
    """``x`` rounded to the grid of ``fmt`` and saturated, as floats of ``x``'s dtype promoted to at least float32
    (half precision cannot hold every 16-bit fixed-point value; see :func:`quantize_raw`; the same single pass,
    writing ``raw * 2**-FL``)."""
    fmt = FixedFormat.parse(fmt)
    mode = check_mode(mode)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"quantize needs a floating-point torch tensor, not {type(x).__name__}"
                        f"{'' if not isinstance(x, torch.Tensor) else ' of ' + str(x.dtype)}")
    out, saturated = _quantize(x, fmt, mode, generator, fmt.resolution, out)
    return (out, saturated) if count_saturated else out


def from_raw(raw: torch.Tensor, fmt, dtype=torch.float32) -> torch.Tensor:
    """Values of raw integers ``raw`` in ``fmt`` (no range check: the device only returns in-range words)."""
    fmt = FixedFormat.parse(fmt)
    return raw.to(dtype) * fmt.resolution
