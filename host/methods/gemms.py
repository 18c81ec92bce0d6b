"""The GEMM shapes a method sends in one training step, for the time model (:mod:`fxtrain.host.timemodel`).

:func:`method_gemms` starts from :func:`fxtrain.host.gemm_shapes.training_gemms` of the model's geometry (in the
small phase of kernel rescaling: the rescaled model at the downsampled input) and shrinks or drops the GEMMs the
way :mod:`.approx` does. Sampled sizes are the sampler's ``k``: exact for ``topk``, the expected size bound for
``bernoulli`` (expected kept groups ``<= k + 0.1``) and an upper bound for ``crs`` (distinct draws); ``top1``'s
inner dimension is its bound ``B * min(P, N)``. :func:`predicted_epoch_s` averages a step over the schedule's
period (4 steps) and an epoch over the run's epochs.

Members
-------
method_gemms
    ``[GemmShape]`` of step ``step`` in epoch ``epoch``.
predicted_epoch_s
    Mean predicted seconds per epoch on a board, over ``epochs`` epochs.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from . import MethodConfig, gradapprox, sampling
from .rescaling import KernelRescaler
from .schedule import formats_at, parse_schedule

__all__ = ["method_gemms", "predicted_epoch_s", "PERIOD"]

PERIOD = 4  # every gradient-approximation schedule repeats after 4 steps


def _geometry(model, input_shape, cfg: MethodConfig, epoch: int):
    from ..gemm_shapes import layer_geometry

    if cfg.rescale_factor > 1 and epoch < cfg.rescale_epochs:
        small = copy.deepcopy(model)
        rescaler = KernelRescaler(small, cfg.rescale_factor, input_shape)
        rescaler.shrink()
        return layer_geometry(small, rescaler.small_input_shape), small
    return layer_geometry(model, input_shape), model


def method_gemms(model, input_shape, batch: int, cfg: MethodConfig, *, epoch: int = 0, step: int = 0):
    """The GEMMs of training step ``step`` (global, from 0) in 0-based ``epoch`` of ``model`` (a float model of
    :mod:`fxtrain.host.models`) on inputs of ``input_shape``, with the methods of ``cfg``."""
    from ..gemm_shapes import training_gemms

    layers, sized = _geometry(model, input_shape, cfg, epoch)
    modules = dict(sized.named_modules())
    # layers with an approximate method send the patch GEMM for a convolution's input gradient
    gemms = training_gemms(layers, batch)
    convs = [g.name for g in layers if g.kind == "conv"]
    out = []
    for shape in gemms:
        index = [g.name for g in layers].index(shape.layer)
        geo = layers[index]
        module = modules[geo.name]
        group = module.kernel_size[0] * module.kernel_size[1] if geo.kind == "conv" else 1
        sampled = cfg.sampling is not None and (cfg.sample_ends or 0 < index < len(layers) - 1)
        conv_index = convs.index(geo.name) if geo.kind == "conv" else None
        if sampled and cfg.sample_mode == "forward":
            kept = group * sampling.sample_count(geo.in_features // group, cfg.sample_ratio, cfg.sample_min_k)
            shape = {"forward": replace(shape, k=kept, b_weights=False),
                     "input_grad": replace(shape, n=kept, b_weights=False),
                     "weight_grad": replace(shape, m=kept)}[shape.kind]
        elif sampled and shape.kind == "input_grad":
            shape = replace(shape, k=sampling.sample_count(geo.out_features, cfg.sample_ratio, cfg.sample_min_k),
                            b_weights=False)
        elif sampled and shape.kind == "weight_grad" and not (
                cfg.gradapprox and conv_index is not None
                and gradapprox.selected(cfg.gradapprox_schedule, conv_index, step)):
            shape = replace(shape, k=geo.positions * sampling.sample_count(batch, cfg.sample_ratio,
                                                                             cfg.sample_min_k))
        if shape.kind == "weight_grad" and cfg.gradapprox and conv_index is not None \
                and gradapprox.selected(cfg.gradapprox_schedule, conv_index, step):
            if cfg.gradapprox in ("zero", "random"):
                continue
            shape = replace(shape, k=batch * min(geo.positions, geo.out_features))
        # layers with an approximate method (every layer once one is on: Methods.attach) send plain GEMMs,
        # never a convolution-mode view
        out.append(replace(shape, conv=None) if cfg.sampling or cfg.gradapprox else shape)
    return out


def predicted_epoch_s(board: str, model, input_shape, batch: int, train_size: int, fmt: str,
                      cfg: MethodConfig, epochs: int = 1) -> float:
    """Mean predicted seconds per epoch of ``epochs`` epochs on ``board`` (:func:`fxtrain.host.timemodel.
    board_platform`) with operand format ``fmt`` (the weights' format; a precision schedule's format per
    epoch), averaging each step over :data:`PERIOD` steps."""
    from ..platforms import board_platform
    from ..timemodel import estimate_step

    schedule = parse_schedule(cfg.precision_schedule) if cfg.precision_schedule else None
    total = 0.0
    steps, remainder = divmod(train_size, batch)
    for epoch in range(epochs):
        platform = board_platform(board, formats_at(schedule, epoch)[0] if schedule else fmt)
        layers, _ = _geometry(model, input_shape, cfg, epoch)
        for size, count in ((batch, steps), (remainder, 1 if remainder else 0)):
            if not count:
                continue
            mean = sum(estimate_step(platform, layers, size,
                                     gemms=method_gemms(model, input_shape, size, cfg, epoch=epoch, step=t)
                                     ).total_s for t in range(PERIOD)) / PERIOD
            total += mean * count
    return total / epochs
