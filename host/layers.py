"""Drop-in fixed-point ``Conv2d`` and ``Linear`` layers whose three training GEMMs run on a backend.

For a layer with input ``x`` and weight ``W`` (``N x K`` once flattened) every training step needs three GEMMs,
and all three go to the backend (the device, its RTL simulation or an emulator, :mod:`fxtrain.host.emulator`):

========================  ==========================  ==================  ====================================
GEMM                      A (M x K)                   B (K x N)           result format / shift
========================  ==========================  ==================  ====================================
forward                   im2col(x_q), activations    W_qᵀ, weights       ``forward_out``: fl_a + fl_w − fl_o
input gradient            dY_q, gradients             W_q, weights        ``grad_input_out``: fl_g + fl_w − fl_o
weight gradient           im2col(x_q)ᵀ, activations   dY_q, gradients     ``grad_weight_out``: fl_a + fl_g − fl_o
========================  ==========================  ==================  ====================================

With ``FixedConfig.input_grad = "convolution"`` the input gradient of a **stride-1 convolution** (padding at most
kernel − 1) is instead one convolution of the output gradient with the flipped kernel,
``im2col(dY_q, padding KH−1−PH) · flip(W_q)`` (``docs/numerics.md`` §7.1), same format and shift: each element of
``dX`` is rounded once and the backend returns ``dX`` itself (``N·H·W x C``) rather than ``N·OH·OW x C·KH·KW``
patches. Other convolutions keep ``dY_q · W_q`` and col2im on the host. The autograd functions are in
:mod:`fxtrain.host.layer_gemms`.

A convolution's forward, weight-gradient and (stride 1) input-gradient GEMMs also get a ConvView of A (raw
``x_q`` or ``dY_q``, the geometry, a key per forward pass, a digest; :mod:`fxtrain.host.conv_offload`) on the
exact path, so a device with the expander receives the map once instead of the im2col matrices; the results are
the same bits.

Operands are quantized on the host (:mod:`fxtrain.host.quantize`) to their formats with the configured rounding
mode; results are rounded **by the backend** (``docs/numerics.md`` §3, §5, §6) to their output formats, whose
word length is the engine's. For a linear layer im2col is the identity. Activations are quantized once, before
im2col, and passed straight through in the backward pass. Bias, the loss, pooling, batch-norm and activations stay
in float32 on the host.

All GEMMs go through one function, :func:`fxtrain.host.layer_gemms.offload_gemm`. A layer's ``approx`` hook (set by
:mod:`fxtrain.host.methods`: column-row sampling, gradient approximation) sends smaller GEMMs, or none, through the
same function while training; evaluation is always exact.

Weights are the B operand of the forward and input-gradient GEMMs and are passed with ``b_key = (layer name,
weight version, role)`` so a device can keep them resident while they do not change. The layer name is its
qualified name in the model (``"features.0"``), given by :func:`fxtrain.host.convert.convert`.

The numerics (:class:`FixedConfig`) are separate from the live state (:class:`Offload`: the backend and the host
quantizers' generator), which is shared by all layers of a converted model and attached to it.

``master_weights``: ``"fixed"`` (the paper) stores the parameters on the weight grid: each forward pass
quantizes the weights (with the configured rounding) and writes the result back into the parameter, so the
optimizer's update is rounded (stochastically, by default) at the next step, and nearest rounding loses updates
smaller than half an ulp — the effect Gupta et al. show. ``"float"`` keeps a float32 master copy that the
optimizer updates and only the GEMM operand is quantized.

Members
-------
DEFAULT_FORMATS : dict
    ``weights`` 16.14, ``activations`` 16.10, ``gradients`` 16.14 (justified in ``docs/training.md``).
FixedConfig
    Numerics of a layer: formats, rounding mode, master-weights option, engine word length.
Offload
    The backend and the quantizer generator that the layers of a converted model share.
FixedLinear, FixedConv2d
    The layers (subclasses of ``nn.Linear`` / ``nn.Conv2d``, same parameters and state dict), each with a
    ``from_float(module, fixed, offload, name)`` constructor (torch.ao style).
im2col
    Patches of an image batch as a GEMM operand (re-exported from :mod:`.im2col`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..sim.input_grad import INPUT_GRADS
from ..sim.fixedpoint import FixedFormat
from ..sim.gemm import EngineConfig
from ..sim.rounding import SHIFT_MAX, RoundingMode
from .backend import Backend
from .im2col import im2col
from .layer_gemms import OffloadedConv, OffloadedMatmul, offload_gemm
from .quantize import check_mode, quantize_raw

__all__ = ["DEFAULT_FORMATS", "FixedConfig", "Offload", "FixedLinear", "FixedConv2d", "im2col"]

DEFAULT_FORMATS = {"weights": "16.14", "activations": "16.10", "gradients": "16.14"}


@dataclass
class FixedConfig:
    """Numerics of a converted layer (nothing live: the backend and the generator are in :class:`Offload`).

    Parameters
    ----------
    weights, activations, gradients : FixedFormat or str
        Operand formats of the weights, the layer inputs and the output gradients.
    forward_out, grad_input_out, grad_weight_out : FixedFormat or str, optional
        Result formats of the three GEMMs; default ``<wl, FL of activations / gradients / gradients>``.
        Their word length must be ``wl`` (the rounder saturates at the engine's WL).
    rounding : RoundingMode or str
        ``RoundingMode.STOCHASTIC`` / ``"stochastic"`` or ``NEAREST`` / ``"nearest"``: host quantization of the
        operands and the backend's rounding. Stored as a :class:`~fxtrain.sim.rounding.RoundingMode`.
    master_weights : str
        ``"fixed"`` or ``"float"`` (module docstring).
    wl : int
        The engine's word length (default ``EngineConfig().wl``); :class:`Offload` refuses a backend with another.
    input_grad : str
        A convolution's input gradient (``docs/numerics.md`` §7.1): ``"patches"`` (default: the patch GEMM
        ``dY · W``, each patch element rounded, folded by col2im on the host) or ``"convolution"`` (stride-1
        convolutions: one GEMM of the ``dY`` map with the flipped kernel, each ``dX`` element rounded once; a
        device with the expander receives ``dY`` once and returns ``dX``; other convolutions keep patches).

    Members
    -------
    shifts : dict
        ``forward``, ``grad_input``, ``grad_weight``: the rounder shift of each GEMM.
    """

    weights: "FixedFormat | str" = DEFAULT_FORMATS["weights"]
    activations: "FixedFormat | str" = DEFAULT_FORMATS["activations"]
    gradients: "FixedFormat | str" = DEFAULT_FORMATS["gradients"]
    forward_out: "FixedFormat | str | None" = None
    grad_input_out: "FixedFormat | str | None" = None
    grad_weight_out: "FixedFormat | str | None" = None
    rounding: "RoundingMode | str" = RoundingMode.STOCHASTIC
    master_weights: str = "fixed"
    wl: int = EngineConfig.wl
    input_grad: str = "patches"

    def __post_init__(self):
        wl = self.wl
        if not isinstance(wl, int) or isinstance(wl, bool) or wl < 2:
            raise ValueError(f"wl must be an integer of at least 2, not {wl!r}")
        for name in ("weights", "activations", "gradients"):
            fmt = FixedFormat.parse(getattr(self, name))
            if fmt.wl > wl:
                raise ValueError(f"{name} format {fmt} has WL {fmt.wl}, wider than the engine's {wl}-bit operands")
            setattr(self, name, fmt)
        for name, fl_of in (("forward_out", self.activations), ("grad_input_out", self.gradients),
                            ("grad_weight_out", self.gradients)):
            value = getattr(self, name)
            fmt = FixedFormat(wl, min(fl_of.fl, wl)) if value is None else FixedFormat.parse(value)
            if fmt.wl != wl:
                raise ValueError(f"{name} format {fmt} must have the engine's word length {wl} (the device "
                                 f"rounds and saturates results to {wl} bits)")
            setattr(self, name, fmt)
        self.rounding = check_mode(self.rounding)
        if self.master_weights not in ("fixed", "float"):
            raise ValueError(f"master_weights must be 'fixed' or 'float', not {self.master_weights!r}")
        if self.input_grad not in INPUT_GRADS:
            raise ValueError(f"input_grad must be one of {INPUT_GRADS}, not {self.input_grad!r}")
        self.shifts = {
            "forward": self._shift("forward", self.activations, self.weights, self.forward_out),
            "grad_input": self._shift("input-gradient", self.gradients, self.weights, self.grad_input_out),
            "grad_weight": self._shift("weight-gradient", self.activations, self.gradients, self.grad_weight_out),
        }

    @staticmethod
    def _shift(gemm, fa, fb, fo):
        shift = fa.fl + fb.fl - fo.fl
        if not 0 <= shift <= SHIFT_MAX:
            raise ValueError(f"The {gemm} GEMM needs shift {fa.fl} + {fb.fl} - {fo.fl} = {shift} (operands {fa} "
                             f"and {fb}, result {fo}), but the device's rounder takes shifts 0 to {SHIFT_MAX}")
        return shift

    def describe(self) -> str:
        return (f"weights {self.weights}, activations {self.activations}, gradients {self.gradients}, "
                f"outputs {self.forward_out}/{self.grad_input_out}/{self.grad_weight_out}, "
                f"{self.rounding} rounding, {self.master_weights} master weights"
                + ("" if self.input_grad == "patches" else f", {self.input_grad} input gradients"))


class Offload:
    """The live side of a converted model, shared by its fixed-point layers.

    Parameters
    ----------
    backend : Backend
        Where every GEMM goes (:class:`fxtrain.host.backend.Backend`).
    seed : int
        Seeds ``generator``.

    Members
    -------
    backend : Backend
    generator : torch.Generator
        Source of the host quantizers' uniform numbers (checkpointed by the training loop).
    """

    def __init__(self, backend: Backend, seed: int = 0):
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must implement fxtrain.host.backend.Backend (an emulator or a Device), "
                            f"not {backend!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        self.backend = backend
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def check(self, fixed: FixedConfig) -> FixedConfig:
        """``fixed``, if its word length is the backend's engine's; ValueError otherwise."""
        if not isinstance(fixed, FixedConfig):
            raise TypeError(f"fixed must be a FixedConfig, not {fixed!r}")
        if fixed.wl != self.backend.config.wl:
            raise ValueError(f"FixedConfig is for a {fixed.wl}-bit engine, the backend's engine has "
                             f"{self.backend.config.wl}-bit words (formats {fixed.describe()})")
        return fixed


class _QuantizeActivation(torch.autograd.Function):
    """Forward: quantize to the activation format; backward: straight through."""

    @staticmethod
    def forward(ctx, x, layer):
        cfg = layer.fixed
        raw, sat = quantize_raw(x.detach(), cfg.activations, cfg.rounding, layer.offload.generator,
                                count_saturated=True)
        layer.stats["activation_saturated"] += sat
        layer.stats["activations"] += raw.numel()
        return raw.mul_(cfg.activations.resolution)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _FixedMixin:
    """Shared state and the GEMM entry point of :class:`FixedLinear` and :class:`FixedConv2d`."""

    def _init_fixed(self, fixed: FixedConfig, offload: Offload, name=None):
        if not isinstance(offload, Offload):
            raise TypeError(f"offload must be an Offload, not {offload!r}")
        self.fixed = offload.check(fixed)
        self.offload = offload
        # the residency key of the weights: the qualified name given by convert(), else this object's identity
        self.key = name if name is not None else f"{type(self).__name__}@{id(self):x}"
        self.stats = dict.fromkeys(("gemms", "macs", "outputs", "saturated", "activations",
                                    "activation_saturated", "gradients", "gradient_saturated"), 0)
        self.approx = None  # an approximate-training method's per-layer hook (fxtrain.host.methods)
        self._forwards = 0  # exact forward passes (the per-forward part of a convolution map's key)

    def _gemm(self, role, a_raw, b_raw, out_fmt, b_key=None, a_view=None):
        m, k = a_raw.shape
        n = b_raw.shape[1]
        c_raw, sat = offload_gemm(self.offload.backend, a_raw, b_raw, self.fixed.shifts[role], self.fixed.rounding,
                                  b_key, a_view)
        self.stats["gemms"] += 1
        self.stats["macs"] += m * k * n
        self.stats["outputs"] += m * n
        self.stats["saturated"] += sat
        return c_raw.mul_(out_fmt.resolution)

    def _quantize_gradient(self, grad_out):
        """Raw output gradient on the gradient grid (counted in ``stats``)."""
        g_raw, sat = quantize_raw(grad_out, self.fixed.gradients, self.fixed.rounding, self.offload.generator,
                                  count_saturated=True, dtype=torch.float64)
        self.stats["gradient_saturated"] += sat
        self.stats["gradients"] += g_raw.numel()
        return g_raw

    def _approximate(self):
        """Whether this call goes through the layer's ``approx`` (an approximate-training method of
        :mod:`fxtrain.host.methods`, set by ``Methods.attach``): while training only; evaluation is exact."""
        return self.approx is not None and self.training and torch.is_grad_enabled()

    def extra_repr(self):
        return f"{super().extra_repr()}, key={self.key!r}, {self.fixed.describe()}"

    def _quantized_input(self, x):
        return _QuantizeActivation.apply(x, self)

    def _weight_raw(self):
        """Raw quantized weights; with fixed master weights in training mode the parameter is overwritten with
        them first (so the optimizer's last update is rounded here, once)."""
        cfg = self.fixed
        with torch.no_grad():
            w_raw = quantize_raw(self.weight, cfg.weights, cfg.rounding, self.offload.generator, dtype=torch.float64)
            if cfg.master_weights == "fixed" and self.training:
                self.weight.copy_(w_raw * cfg.weights.resolution)
        return w_raw


class FixedLinear(_FixedMixin, nn.Linear):
    """``nn.Linear`` whose three GEMMs run on ``offload.backend`` (module docstring); the bias stays float.

    Parameters
    ----------
    in_features, out_features, bias
        As ``nn.Linear``.
    fixed : FixedConfig
    offload : Offload
    name : str, optional
        Key of the weights on the device: the qualified name in the model (default: unique to this object).
    """

    sample_group = 1      # im2col columns per input channel (column-row sampling's unit)
    sample_positions = 1  # GEMM rows per example

    def __init__(self, in_features, out_features, bias=True, *, fixed: FixedConfig, offload: Offload, name=None):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_fixed(fixed, offload, name)

    @classmethod
    def from_float(cls, module: nn.Linear, fixed: FixedConfig, offload: Offload, name=None) -> "FixedLinear":
        """The fixed-point twin of ``module``, with a copy of its parameters."""
        new = cls(module.in_features, module.out_features, module.bias is not None, fixed=fixed, offload=offload,
                  name=name)
        new.load_state_dict(module.state_dict())
        return new

    def forward(self, x):
        lead = x.shape[:-1]
        a = self._quantized_input(x).reshape(-1, self.in_features)
        function = self.approx if self._approximate() else OffloadedMatmul
        y = function.apply(a, self.weight, self._weight_raw(), self).reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias


class FixedConv2d(_FixedMixin, nn.Conv2d):
    """``nn.Conv2d`` (any stride and padding, ``groups=1``, ``dilation=1``, zero padding) whose three GEMMs run on
    ``offload.backend`` via im2col (module docstring); the bias stays float.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, bias
        As ``nn.Conv2d``.
    fixed : FixedConfig
    offload : Offload
    name : str, optional
        Key of the weights on the device (as :class:`FixedLinear`).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *,
                 fixed: FixedConfig, offload: Offload, name=None, **kwargs):
        for option, default in (("groups", 1), ("dilation", 1), ("padding_mode", "zeros")):
            value = kwargs.pop(option, default)
            if value not in (default, (default, default)):
                raise ValueError(f"FixedConv2d supports {option}={default!r} only, not {value!r}")
        if kwargs:
            raise TypeError(f"FixedConv2d got unexpected arguments {sorted(kwargs)}")
        if isinstance(padding, str):
            raise ValueError(f"FixedConv2d needs numeric padding, not {padding!r}")
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self._init_fixed(fixed, offload, name)

    @classmethod
    def from_float(cls, module: nn.Conv2d, fixed: FixedConfig, offload: Offload, name=None) -> "FixedConv2d":
        """The fixed-point twin of ``module``, with a copy of its parameters; ValueError for a convolution it cannot
        run (groups, dilation, non-zero padding modes, string padding)."""
        new = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                  module.bias is not None, fixed=fixed, offload=offload, name=name, groups=module.groups,
                  dilation=module.dilation, padding_mode=module.padding_mode)
        new.load_state_dict(module.state_dict())
        return new

    @property
    def sample_group(self):
        return self.kernel_size[0] * self.kernel_size[1]

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"FixedConv2d expects N x C x H x W input, not shape {tuple(x.shape)}")
        batch, _, height, width = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_h = (height + 2 * ph - kh) // sh + 1
        out_w = (width + 2 * pw - kw) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"FixedConv2d input {height}x{width} with padding {self.padding} is smaller than the "
                             f"kernel {self.kernel_size}")
        x_q = self._quantized_input(x)
        geometry = (self.kernel_size, self.stride, self.padding)
        w_raw = self._weight_raw().reshape(self.out_channels, -1)
        weight = self.weight.reshape(self.out_channels, -1)
        self.sample_positions = out_h * out_w
        if self._approximate():
            y = self.approx.apply(im2col(x_q, *geometry), weight, w_raw, self)
        else:
            y = OffloadedConv.apply(x_q, weight, w_raw, self, geometry)
        y = y.reshape(batch, out_h * out_w, self.out_channels).transpose(1, 2)
        y = y.reshape(batch, self.out_channels, out_h, out_w)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

