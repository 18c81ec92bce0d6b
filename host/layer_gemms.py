"""The training GEMMs of a fixed-point layer as autograd functions (the GEMM table of :mod:`fxtrain.host.layers`):
every call of ``backend.gemm`` a layer makes on its exact path goes through here.

A linear layer's three GEMMs are :class:`OffloadedMatmul`. A convolution's are :class:`OffloadedConv`, which
takes the quantized input map itself (not its im2col matrix) so that:

* the forward and weight-gradient GEMMs carry a ConvView of their A (:mod:`.conv_offload`: a device with the
  expander receives the map once instead of the im2col matrices; the same bits);
* with ``FixedConfig.input_grad = "convolution"``, the input gradient of a stride-1 convolution is **one
  convolution** of the output gradient ``dY`` with the flipped kernel (``docs/numerics.md`` §7.1,
  :func:`fxtrain.sim.input_grad.input_grad_geometry`): the backend rounds each element of ``dX`` once and returns
  ``N·H·W x C`` words, and the GEMM's A carries a ConvView of the ``dY`` map, so a device with the expander
  receives ``dY`` once and generates the patches itself. By default, and for strided or over-padded convolutions,
  the input gradient is the patch GEMM ``dY · W``, whose rounded ``N·OH·OW x C·KH·KW`` patches the host folds in
  float (col2im, :func:`fxtrain.host.im2col.col2im`; exact: sums of at most ``KH·KW`` values on one grid).

The approximate-training methods (:mod:`fxtrain.host.methods.approx`) replace these functions with their own and
send plain GEMMs (patches and col2im for a convolution's input gradient).

Members
-------
offload_gemm(backend, a_raw, b_raw, shift, mode, b_key=None, a_view=None) -> (c_raw, saturated)
    The one call site of ``backend.gemm``.
OffloadedMatmul
    ``y = A @ Wᵀ`` with its input and weight gradients.
OffloadedConv
    ``y = im2col(x_q) @ Wᵀ`` with ``dX`` and ``dW``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..sim.input_grad import flip_kernel, gradient_map, input_grad_geometry, input_grad_map
from .conv_offload import layer_view
from .im2col import col2im, im2col

__all__ = ["offload_gemm", "OffloadedMatmul", "OffloadedConv"]


def offload_gemm(backend, a_raw, b_raw, shift, mode, b_key=None, a_view=None):
    """``round(a_raw @ b_raw)`` on the backend; operands and result are float tensors holding raw integers.

    The one call site of ``backend.gemm`` (module docstring). ``a_view``: the ConvView of ``a_raw`` (convolution
    mode, :mod:`.conv_offload`), passed only when given. Returns ``(c_raw, saturated_count)``.
    """
    extra = {} if a_view is None else {"a_view": a_view}
    if backend.accepts_torch:
        result = backend.gemm(a_raw, b_raw, shift, mode, b_key=b_key, **extra)
        c = result.c
    else:
        result = backend.gemm(a_raw.to(torch.int64).numpy(), b_raw.to(torch.int64).numpy(), shift, mode,
                              b_key=b_key, **extra)
        c = torch.from_numpy(result.c)
    count = getattr(result, "saturated_count", None)
    return c.to(torch.float32), int(result.saturated.sum()) if count is None else count


def _forward(ctx, a, w_raw, layer, view):
    """The forward GEMM of ``a`` (M x K on the activation grid) and the weights; keeps what the backward needs."""
    cfg = layer.fixed
    # exact: ``a`` is on the activation grid; float64 is what the emulators' exact GEMM takes, and the weight
    # gradient GEMM reuses it
    a_raw = a.to(torch.float64).mul_(2.0 ** cfg.activations.fl)
    version = layer.weight._version
    c_raw = layer._gemm("forward", a_raw, w_raw.t(), cfg.forward_out, b_key=(layer.key, version, "Wt"),
                        a_view=view)
    ctx.view, ctx.layer, ctx.version = view, layer, version
    ctx.save_for_backward(a_raw, w_raw)
    return c_raw


def _weight_gradient(ctx, g_raw):
    """``dW`` (N x K) from the saved A and the raw output gradient (A's view transposed, if any)."""
    layer = ctx.layer
    a_raw, _ = ctx.saved_tensors
    view = None if ctx.view is None else replace(ctx.view, transposed=True)
    return layer._gemm("grad_weight", a_raw.t(), g_raw, layer.fixed.grad_weight_out, a_view=view).t()


def _patch_gradient(ctx, g_raw):
    """The patch GEMM ``dY · W`` (the input gradient of A)."""
    layer = ctx.layer
    _, w_raw = ctx.saved_tensors
    return layer._gemm("grad_input", g_raw, w_raw, layer.fixed.grad_input_out, b_key=(layer.key, ctx.version, "W"))


class OffloadedMatmul(torch.autograd.Function):
    """``y = A @ Wᵀ`` with A (M x K) already on the activation grid, W (N x K) the float weight (for its
    gradient) and ``w_raw`` its raw quantized value; the three GEMMs of the module table go to the backend.
    ``layer`` supplies the config, the key and the counters."""

    @staticmethod
    def forward(ctx, a, weight, w_raw, layer):
        return _forward(ctx, a, w_raw, layer, None)

    @staticmethod
    def backward(ctx, grad_out):
        g_raw = ctx.layer._quantize_gradient(grad_out)
        grad_a = _patch_gradient(ctx, g_raw) if ctx.needs_input_grad[0] else None
        grad_w = _weight_gradient(ctx, g_raw) if ctx.needs_input_grad[1] else None
        return grad_a, grad_w, None, None


class OffloadedConv(torch.autograd.Function):
    """``y = im2col(x_q) @ Wᵀ`` for ``x_q`` (N, C, H, W) on the activation grid, W (O x C·KH·KW) the float weight
    and ``w_raw`` its raw quantized value, ``geometry`` the layer's ``(kernel_size, stride, padding)``; returns the
    ``N·OH·OW x O`` output and, backward, ``dX`` (module docstring) and ``dW``. One map key per forward pass, so the
    map sent for the forward GEMM serves the weight gradient."""

    @staticmethod
    def forward(ctx, x_q, weight, w_raw, layer, geometry):
        layer._forwards += 1
        view = layer_view(x_q, layer.fixed.activations.fl, geometry, (layer.key, "x", layer._forwards), False)
        ctx.geometry = geometry
        return _forward(ctx, im2col(x_q, *geometry), w_raw, layer, view)

    @staticmethod
    def backward(ctx, grad_out):
        layer = ctx.layer
        g_raw = layer._quantize_gradient(grad_out)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _input_gradient(ctx, g_raw)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_gradient(ctx, g_raw)
        return grad_x, grad_w, None, None, None


def _input_gradient(ctx, g_raw):
    """``dX`` (N, C, H, W): one convolution of the ``dY`` map with the flipped kernel (``input_grad`` is
    ``"convolution"`` and the stride 1), else the patch GEMM folded by col2im (module docstring)."""
    layer, geom = ctx.layer, ctx.view.geom
    _, w_raw = ctx.saved_tensors
    outputs = w_raw.shape[0]
    tgeom = input_grad_geometry(geom, outputs) if layer.fixed.input_grad == "convolution" else None
    if tgeom is None:
        return col2im(_patch_gradient(ctx, g_raw), (geom.n, geom.c, geom.h, geom.w), *ctx.geometry)
    dy = torch.from_numpy(gradient_map(g_raw.numpy(), geom, outputs))
    kernel = (tgeom.kh, tgeom.kw)
    t_geometry = (kernel, (1, 1), (tgeom.ph, tgeom.pw))
    view = layer_view(dy, 0, t_geometry, (layer.key, "dy", layer._forwards), False)
    b_raw = torch.from_numpy(flip_kernel(w_raw.numpy().reshape(outputs, geom.c, *kernel)))
    c = layer._gemm("grad_input", im2col(dy, *t_geometry), b_raw, layer.fixed.grad_input_out,
                    b_key=(layer.key, ctx.version, "Wflip"), a_view=view)
    return torch.from_numpy(input_grad_map(c.numpy(), geom))
