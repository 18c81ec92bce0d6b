"""The GEMMs of a training step: layer geometry measured on a torch model, and the forward, input-gradient and
weight-gradient GEMM shapes derived from it (the table of :mod:`fxtrain.host.layers`).

Members
-------
GEMM_KINDS : tuple of str
    ``("forward", "input_grad", "weight_grad")``.
LayerGeometry, GemmShape
    One offloaded layer; one GEMM of a training step.
layer_geometry
    The offloadable layers of a torch model, measured by a forward pass with hooks.
training_gemms
    The GEMMs of one training step.
lenet_layers
    Layer geometry of ``fxtrain.host.models`` LeNet.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GEMM_KINDS", "LayerGeometry", "GemmShape", "layer_geometry", "training_gemms", "lenet_layers"]

GEMM_KINDS = ("forward", "input_grad", "weight_grad")


@dataclass(frozen=True)
class LayerGeometry:
    """Shape of one offloaded layer for one sample.

    Parameters
    ----------
    name : str
        Module name in the model (``"conv1"``).
    kind : str
        ``"conv"`` or ``"linear"``.
    in_features : int
        ``C_in * kh * kw`` for a convolution (the im2col row length), ``in_features`` for a linear layer.
    out_features : int
        ``C_out`` or ``out_features``.
    positions : int
        Output positions per sample, ``H_out * W_out`` (1 for a linear layer).
    first : bool
        Whether the layer sees the network input (its input gradient is not needed).
    conv : tuple or None
        A convolution's ``(C, H, W, KH, KW, SH, SW, PH, PW)`` (input of one sample, kernel, stride, padding), for
        convolution mode (:mod:`fxtrain.sim.conv`); None for a linear layer.

    Members
    -------
    macs_per_sample : int
    """

    name: str
    kind: str
    in_features: int
    out_features: int
    positions: int
    first: bool
    conv: tuple = None

    @property
    def macs_per_sample(self):
        return self.in_features * self.out_features * self.positions


@dataclass(frozen=True)
class GemmShape:
    """One GEMM ``C (M x N) = A (M x K) @ B (K x N)`` of a training step.

    ``b_weights`` says whether ``B`` is (an orientation of) the layer's weight matrix, which the layers send with
    a ``b_key`` so a device keeps it resident until the weights change. ``rounding`` is the ``(shift, mode)`` of
    the GEMM when known (``None``: assume it differs from the previous GEMM's, costing one SET_ROUNDING).
    ``conv``: the :class:`fxtrain.sim.conv.ConvGeometry` of a convolution's forward or weight-gradient GEMM (the
    input map ``X``) or of its input-gradient convolution (the map ``dY``), whose A the layers also pass as a
    feature map (convolution mode); None otherwise.

    Members
    -------
    macs : int
    """

    layer: str
    kind: str
    m: int
    k: int
    n: int
    b_weights: bool
    rounding: tuple = None
    conv: object = None

    @property
    def macs(self):
        return self.m * self.k * self.n


def layer_geometry(model, input_shape):
    """The offloadable layers (``Conv2d``/``Linear`` or anything with their attributes) of ``model`` in call order.

    Runs one forward pass of a zero input of ``input_shape`` (one sample, e.g. ``(1, 28, 28)``) with hooks that
    record each layer's output size, so the geometry is the model's own, never re-typed.
    """
    import torch

    records = []
    hooks = []

    def hook(module, inputs, output, name):
        conv = None
        if hasattr(module, "kernel_size"):
            kh, kw = module.kernel_size
            in_features = module.in_channels * kh * kw
            out_features = module.out_channels
            positions = int(output.shape[-2] * output.shape[-1])
            kind = "conv"
            _, c, h, w = inputs[0].shape
            conv = (int(c), int(h), int(w), kh, kw, *_pair(module.stride), *_pair(module.padding))
        else:
            in_features, out_features, positions, kind = module.in_features, module.out_features, 1, "linear"
        records.append(LayerGeometry(name, kind, in_features, out_features, positions, first=not records,
                                     conv=conv))

    for name, module in model.named_modules():
        is_conv = all(hasattr(module, a) for a in ("in_channels", "out_channels", "kernel_size"))
        is_linear = all(hasattr(module, a) for a in ("in_features", "out_features"))
        if is_conv or is_linear:
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)))
    try:
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape)))
    finally:
        for h in hooks:
            h.remove()
    if not records:
        raise ValueError(f"Model {type(model).__name__} has no convolution or linear layer to offload")
    return records


def training_gemms(layers, batch, rounding=None, input_grad="patches"):
    """The GEMMs of one training step of ``batch`` samples, forward in layer order, then backward in reverse.

    Per layer with ``P`` output positions per sample, ``F_in`` inputs (``C_in*kh*kw``) and ``F_out`` outputs
    (the table of :mod:`fxtrain.host.layers`): forward ``(B*P x F_in) @ (F_in x F_out)``, input gradient
    ``(B*P x F_out) @ (F_out x F_in)`` (not for the first layer, whose input needs no gradient), weight gradient
    ``(F_in x B*P) @ (B*P x F_out)``; backward issues the input gradient before the weight gradient. The input
    gradient of a stride-1 convolution is the convolution of :func:`fxtrain.sim.input_grad.input_grad_geometry`
    instead when ``input_grad`` is ``"convolution"`` (:attr:`fxtrain.host.layers.FixedConfig.input_grad`),
    ``(B*H*W x F_out*kh*kw) @ (F_out*kh*kw x C_in)`` with its ``conv`` geometry (the map ``dY``), as
    :class:`fxtrain.host.layer_gemms.OffloadedConv` sends it; ``"patches"`` (the default) keeps the patch GEMM.

    ``rounding`` maps a GEMM kind to its ``(shift, mode)``; by default each kind is taken to have its own
    (one SET_ROUNDING whenever the kind changes, at most 17 bytes more than needed per GEMM).
    """
    from ..sim.conv import ConvGeometry
    from ..sim.input_grad import INPUT_GRADS, input_grad_geometry

    rounding = rounding or {}
    if input_grad not in INPUT_GRADS:
        raise ValueError(f"input_grad must be one of {INPUT_GRADS}, not {input_grad!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"Batch size must be a positive integer, not {batch!r}")

    forward, backward = [], []
    for layer in layers:
        rows = batch * layer.positions
        geom = grad_geom = None
        if layer.conv is not None:
            c, h, w, *kernel = layer.conv
            geom = ConvGeometry(batch, c, h, w, *kernel)
            grad_geom = input_grad_geometry(geom, layer.out_features) if input_grad == "convolution" else None
        forward.append(GemmShape(layer.name, "forward", rows, layer.in_features, layer.out_features, True,
                                 rounding.get("forward", "forward"), geom))
        step = []
        if not layer.first and grad_geom is not None:
            step.append(GemmShape(layer.name, "input_grad", grad_geom.positions, grad_geom.patch, geom.c, True,
                                  rounding.get("input_grad", "input_grad"), grad_geom))
        elif not layer.first:
            step.append(GemmShape(layer.name, "input_grad", rows, layer.out_features, layer.in_features, True,
                                  rounding.get("input_grad", "input_grad")))
        step.append(GemmShape(layer.name, "weight_grad", layer.in_features, rows, layer.out_features, False,
                              rounding.get("weight_grad", "weight_grad"), geom))
        backward = step + backward
    return forward + backward


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def lenet_layers():
    """Geometry of the LeNet of :mod:`fxtrain.host.models` on 28 x 28 MNIST images."""
    try:
        from . import models
    except ImportError as error:
        raise ValueError(f"fxtrain.host.models is not available ({error}); cannot size LeNet") from None
    return layer_geometry(models.LeNet(), (1, 28, 28))
