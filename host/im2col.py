"""im2col: the patches of an image batch as a GEMM operand (a strided view, differentiable; its backward is
col2im). Used by :class:`fxtrain.host.layers.FixedConv2d` (re-exported there); ``fxtrain.sim.conv.conv_matrix`` is
the same matrix, defined on raw integers for convolution mode.

Members
-------
im2col
    Patches of ``x`` (B x C x H x W) as a (B*OH*OW) x (C*KH*KW) matrix.
col2im
    Its adjoint: patches (B*OH*OW) x (C*KH*KW) added back into a B x C x H x W map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["im2col", "col2im"]


def im2col(x: torch.Tensor, kernel_size, stride, padding) -> torch.Tensor:
    """Patches of ``x`` (B x C x H x W) as a (B*OH*OW) x (C*KH*KW) matrix, rows in (b, oh, ow) order and
    columns in (c, kh, kw) order, i.e. equal to ``F.unfold(x, ...).transpose(1, 2)`` flattened and matching
    ``weight.reshape(out_channels, -1)``. Differentiable; its backward is col2im (``F.fold``)."""
    return _Im2col.apply(x, tuple(kernel_size), tuple(stride), tuple(padding))


class _Im2col(torch.autograd.Function):
    """Forward: a strided view of the padded input, copied once (far faster than ``F.unfold`` on CPU); backward:
    ``F.fold`` (col2im, adds overlapping patches), far faster than autograd's generic ``unfold_backward``."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
        ctx.geometry = (x.shape, kernel_size, stride, padding)
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        patches = x.unfold(2, kh, sh).unfold(3, kw, sw)  # B, C, OH, OW, KH, KW (a view)
        batch, channels, out_h, out_w = patches.shape[:4]
        return patches.permute(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w, channels * kh * kw)

    @staticmethod
    def backward(ctx, grad):
        return col2im(grad, *ctx.geometry), None, None, None


def col2im(patches: torch.Tensor, shape, kernel_size, stride, padding) -> torch.Tensor:
    """The ``shape`` (B x C x H x W) map whose im2col adjoint ``patches`` is: every patch element added at the
    position it was read from (``F.fold``; overlapping patches add, the padding is dropped)."""
    batch, _, height, width = shape
    cols = patches.reshape(batch, -1, patches.shape[1]).transpose(1, 2)  # B x (C*KH*KW) x (OH*OW)
    return F.fold(cols, (height, width), tuple(kernel_size), stride=tuple(stride), padding=tuple(padding))
