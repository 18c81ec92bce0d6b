"""The approximate training GEMMs of one layer: column-row sampling and weight-gradient approximation.

:class:`ApproxMatmul` replaces :class:`fxtrain.host.layer_gemms.OffloadedMatmul` for a layer with an ``approx``
(:class:`LayerApprox`) in training mode; every GEMM it sends goes through ``layer._gemm`` and so through the one
backend call site, with the smaller shape it really has. With ``A`` (``M x K``, im2col) and ``W`` (``N x K``):

forward sampling (the paper's best)
    keep input-channel groups ``S`` of ``K`` (score ``||A[:, c]|| * ||W[:, c]||``):
    forward ``A[:, S] D @ W[:, S]^T`` (``M x |S| x N``); input gradient ``dY @ W[:, S]`` (``M x N x |S|``), times
    ``D`` on the host, zero outside ``S``; weight gradient ``(A[:, S] D)^T @ dY`` (``|S| x M x N``), zero outside
    ``S`` — backward flows only through the kept entries.
backward sampling
    forward exact; input gradient keeps output channels ``O`` (score ``||W[o]|| * ||dY[:, o]||``):
    ``dY[:, O] D @ W[O]`` (``M x |O| x K``); weight gradient keeps examples ``E`` (score
    ``||A_e|| * ||dY_e||`` over the example's ``P`` rows): ``A[E]^T @ D dY[E]`` (``K x |E|P x N``).

``D`` holds the sampler's weights; a weighted operand is re-quantized to its format with the configured rounding
(stochastic rounding keeps the estimator unbiased up to saturation, which is counted in the layer's stats). A
sampled weight operand has no ``b_key`` (it is not the resident matrix). Gradient approximation
(:mod:`.gradapprox`) then replaces the weight gradient of a selected convolution at a selected step.

Members
-------
LayerApprox
    A layer's method settings and its link to the run's :class:`fxtrain.host.methods.Methods`.
ApproxMatmul
    The autograd function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..quantize import quantize_raw
from . import gradapprox, sampling

__all__ = ["LayerApprox", "ApproxMatmul"]


@dataclass
class LayerApprox:
    """Per-layer settings: ``owner`` (the :class:`Methods`), ``conv_index`` (None for a linear layer),
    ``sample`` (column-row sampling applies to this layer)."""

    owner: object
    conv_index: "int | None"
    sample: bool

    @property
    def cfg(self):
        return self.owner.cfg

    def gradapprox_now(self) -> "str | None":
        cfg = self.cfg
        if cfg.gradapprox is None or self.conv_index is None:
            return None
        return cfg.gradapprox if gradapprox.selected(cfg.gradapprox_schedule, self.conv_index,
                                                     self.owner.step) else None

    def choose(self, scores, groups):
        cfg = self.cfg
        k = sampling.sample_count(groups, cfg.sample_ratio, cfg.sample_min_k)
        return sampling.choose(scores, k, cfg.sampling, self.owner.generator)

    def apply(self, a, weight, w_raw, layer):
        return ApproxMatmul.apply(a, weight, w_raw, layer)


def _weighted(raw, weights, fmt, layer, dim):
    """``raw`` scaled by ``weights`` along ``dim`` and re-quantized to ``fmt`` (raw result)."""
    if weights is None:
        return raw
    cfg = layer.fixed
    w = weights.to(raw.dtype)
    scaled = raw * (w[None, :] if dim == 1 else w[:, None]) * fmt.resolution
    q, sat = quantize_raw(scaled, fmt, cfg.rounding, layer.offload.generator, count_saturated=True)
    layer.stats["sample_saturated"] = layer.stats.get("sample_saturated", 0) + sat
    return q


def _scatter_cols(part, cols, total):
    out = torch.zeros(part.shape[0], total, dtype=part.dtype)
    out[:, cols] = part
    return out


class ApproxMatmul(torch.autograd.Function):
    """``y = A @ W^T`` through the backend with the layer's approximations (module docstring)."""

    @staticmethod
    def forward(ctx, a, weight, w_raw, layer):
        cfg, ap = layer.fixed, layer.approx
        a_raw = a * (2.0 ** cfg.activations.fl)
        version = weight._version
        m, k = a_raw.shape
        cols = weights = None
        if ap.sample and ap.cfg.sampling is not None and ap.cfg.sample_mode == "forward":
            group = layer.sample_group
            scores = sampling.group_norms(a_raw, group, 1) * sampling.group_norms(w_raw, group, 1)
            idx, weights = ap.choose(scores, scores.numel())
            cols, weights = sampling.expand(idx, weights, group)
        if cols is None:
            a_used = a_raw
            c_raw = layer._gemm("forward", a_raw, w_raw.t(), cfg.forward_out, b_key=(layer.key, version, "Wt"))
        elif cols.numel() == 0:
            a_used = a_raw[:, :0]
            c_raw = torch.zeros(m, w_raw.shape[0])
        else:
            a_used = _weighted(a_raw[:, cols], weights, cfg.activations, layer, 1)
            c_raw = layer._gemm("forward", a_used, w_raw[:, cols].t(), cfg.forward_out)
        ctx.layer, ctx.version, ctx.k = layer, version, k
        ctx.cols, ctx.weights = cols, weights
        ctx.save_for_backward(a_used, w_raw)
        return c_raw

    @staticmethod
    def backward(ctx, grad_out):
        layer, cols, weights = ctx.layer, ctx.cols, ctx.weights
        cfg, ap = layer.fixed, layer.approx
        a_used, w_raw = ctx.saved_tensors
        g_raw = layer._quantize_gradient(grad_out)
        backward_sampling = ap.sample and ap.cfg.sampling is not None and ap.cfg.sample_mode == "backward"
        grad_a = grad_w = None
        if ctx.needs_input_grad[0]:
            if cols is not None:
                grad_a = torch.zeros(g_raw.shape[0], ctx.k)
                if cols.numel():
                    part = layer._gemm("grad_input", g_raw, w_raw[:, cols], cfg.grad_input_out)
                    grad_a[:, cols] = part if weights is None else part * weights.to(part.dtype)
            elif backward_sampling:
                scores = sampling.group_norms(w_raw, 1, 0) * sampling.group_norms(g_raw, 1, 1)
                idx, wts = ap.choose(scores, scores.numel())
                if idx.numel():
                    g_s = _weighted(g_raw[:, idx], wts, cfg.gradients, layer, 1)
                    grad_a = layer._gemm("grad_input", g_s, w_raw[idx], cfg.grad_input_out)
                else:
                    grad_a = torch.zeros(g_raw.shape[0], ctx.k)
            else:
                grad_a = layer._gemm("grad_input", g_raw, w_raw, cfg.grad_input_out,
                                     b_key=(layer.key, ctx.version, "W"))
        if ctx.needs_input_grad[1]:
            grad_w = _weight_gradient(layer, ap, a_used, g_raw, backward_sampling and cols is None)
            if cols is not None:
                grad_w = _scatter_cols(grad_w, cols, ctx.k)
        return grad_a, grad_w, None, None


def _weight_gradient(layer, ap, a_used, g_raw, sample_examples):
    """``dW`` (``N x K_used``) of the layer from ``a_used`` (``M x K_used``) and ``g_raw`` (``M x N``)."""
    cfg = layer.fixed
    n, k_used = g_raw.shape[1], a_used.shape[1]
    positions = layer.sample_positions
    mode = ap.gradapprox_now()
    if k_used == 0:
        return torch.zeros(n, 0)
    if mode == "zero":
        return torch.zeros(n, k_used)
    if mode == "random":
        batch = g_raw.shape[0] // positions
        return torch.randn(n, k_used, generator=ap.owner.generator) / batch
    if mode == "top1":
        rows, values = gradapprox.top1_rows(g_raw, positions, cfg.gradients)
        return layer._gemm("grad_weight", a_used[rows].t(), values, cfg.grad_weight_out).t()
    if sample_examples:
        scores = (sampling.group_norms(a_used, positions, 0) * sampling.group_norms(g_raw, positions, 0))
        idx, wts = ap.choose(scores, scores.numel())
        if idx.numel() == 0:
            return torch.zeros(n, k_used)
        rows, wts = sampling.expand(idx, wts, positions)
        g_s = _weighted(g_raw[rows], wts, cfg.gradients, layer, 0)
        return layer._gemm("grad_weight", a_used[rows].t(), g_s, cfg.grad_weight_out).t()
    return layer._gemm("grad_weight", a_used.t(), g_raw, cfg.grad_weight_out).t()
