"""A convolution's input gradient as a convolution of the output gradient ``dY`` (``docs/numerics.md`` §7.1): the
geometry, the ``dY`` map, the flipped kernel and the result layout. Written once; the layers
(``host/layer_gemms.py``), the time model (``host/gemm_shapes.py``) and the tests import it.

For a stride-1 convolution ``g`` with ``O`` output channels and padding ``PH <= KH − 1``, ``PW <= KW − 1``, the
input gradient is itself a forward convolution: ``dX = im2col(dY, KH x KW, stride 1, padding (KH−1−PH,
KW−1−PW)) · flip(W)`` (:func:`input_grad_geometry`), where the map ``dY`` is the output gradient as an
``(N, O, OH, OW)`` feature map (:func:`gradient_map`) and ``flip(W)[(o·KH + ky)·KW + kx, c] =
W[o, c, KH−1−ky, KW−1−kx]`` (:func:`flip_kernel`, ``O·KH·KW x C``). Its GEMM has ``M = N·H·W`` rows and ``C``
columns (:func:`input_grad_map`: row ``(n·H + y)·W + x`` is ``dX[n, :, y, x]``), so the device answers with
``dX`` itself instead of ``N·OH·OW x C·KH·KW`` patches for the host to fold (col2im), and its A comes from
the ``dY`` map by EXPAND like any forward GEMM. It is a numerics choice of the layers (:data:`INPUT_GRADS`, one
rounding per ``dX`` element instead of one per patch element), not a transport: the default stays the patch GEMM
``dY · W`` with col2im on the host, which other convolutions (stride > 1, wider padding; :func:`input_grad_geometry`
returns None) always use.

Members
-------
INPUT_GRADS
    ``("patches", "convolution")``: the two ways a convolution's input gradient is computed.
input_grad_geometry(geom, out_channels) -> ConvGeometry or None
    The convolution whose forward GEMM is the input gradient of ``geom`` (None: patches and col2im).
gradient_map(dy, geom, out_channels), flip_kernel(w), input_grad_map(c, geom)
    Its map, its B operand, and its result as ``(N, C, H, W)``.
"""

from __future__ import annotations

import numpy as np

from .conv import ConvGeometry

__all__ = ["INPUT_GRADS", "input_grad_geometry", "gradient_map", "flip_kernel", "input_grad_map"]


#: How a convolution's input gradient is computed (``docs/numerics.md`` §7.1, the layers' ``FixedConfig.input_grad``):
#: the patch GEMM ``dY · W`` folded by col2im on the host (the default), or, for a stride-1 convolution, one
#: convolution of ``dY`` with the flipped kernel (:func:`input_grad_geometry`; other convolutions keep patches).
INPUT_GRADS = ("patches", "convolution")


def input_grad_geometry(geom, out_channels):
    """The geometry of the forward convolution that computes the input gradient of convolution ``geom`` with
    ``out_channels`` output channels (module docstring): the map ``dY`` ``(N, O, OH, OW)``, the same kernel, stride
    1, padding ``(KH − 1 − PH, KW − 1 − PW)``; its output is ``H x W``. None when ``geom`` has a stride above 1 or
    a padding wider than ``kernel − 1`` (those keep the patch GEMM and col2im on the host)."""
    if geom.sh != 1 or geom.sw != 1 or geom.ph > geom.kh - 1 or geom.pw > geom.kw - 1:
        return None
    return ConvGeometry(geom.n, out_channels, geom.out_h, geom.out_w, geom.kh, geom.kw, 1, 1,
                        geom.kh - 1 - geom.ph, geom.kw - 1 - geom.pw)


def gradient_map(dy, geom, out_channels):
    """The output gradient ``dy`` (``N·OH·OW x O``, rows ``(n·OH + oy)·OW + ox`` as the forward GEMM's result) as
    the ``(N, O, OH, OW)`` feature map of :func:`input_grad_geometry` (a C-contiguous numpy array)."""
    dy = np.asarray(dy)
    shape = (geom.n, geom.out_h, geom.out_w, out_channels)
    if dy.shape != (geom.positions, out_channels):
        raise ValueError(f"Output gradient shape {dy.shape} does not match the convolution's "
                         f"{(geom.positions, out_channels)}")
    return np.ascontiguousarray(dy.reshape(shape).transpose(0, 3, 1, 2))


def flip_kernel(w):
    """The B operand (``O·KH·KW x C``) of the input-gradient convolution, from the weights ``w``
    (``O, C, KH, KW``): ``B[(o·KH + ky)·KW + kx, c] = w[o, c, KH−1−ky, KW−1−kx]``."""
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"Convolution weights must have shape (O, C, KH, KW), not {w.shape}")
    o, c, kh, kw = w.shape
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(o * kh * kw, c))


def input_grad_map(result, geom):
    """The input-gradient GEMM's result (``N·H·W x C``, rows ``(n·H + y)·W + x``) as ``dX`` ``(N, C, H, W)``, for
    the layer's convolution ``geom`` (a C-contiguous numpy array)."""
    result = np.asarray(result)
    if result.shape != (geom.n * geom.h * geom.w, geom.c):
        raise ValueError(f"Input-gradient result shape {result.shape} does not match the input "
                         f"{(geom.n * geom.h * geom.w, geom.c)}")
    return np.ascontiguousarray(result.reshape(geom.n, geom.h, geom.w, geom.c).transpose(0, 3, 1, 2))
