"""Kernel rescaling (de Gusmão, Francini, Lepsøy, Magli 2016): train the first epochs at a lower resolution.

During the *small* phase the network sees its inputs downsampled by ``s`` (area average to ``ceil(H/s)``) and each
convolution with kernel ``k``, padding ``p`` and stride ``t`` runs with kernel ``k' = ceil(k/s)`` and padding
``ceil(p/s)``; the stride is kept (a stride-2 layer still halves its map, so every map is ``1/s`` of its full
size). When ``k'`` is even the output can be one larger than ``ceil(H_full_out / s)``: the last row and column are
cropped (the same as asymmetric padding). A linear layer fed by a flattened ``C x h x w`` map (LeNet's fc1) is a
convolution whose kernel covers the map, and is rescaled the same way. 1x1 kernels stay as they are (a pointwise
map has no extent to rescale); a kernel with ``1 < k`` and ``k' = 1`` is refused.

Kernel maps (bilinear interpolation with aligned corners, so a small tap ``i`` sits at full position ``s*i`` when
``k = s(k'-1)+1``, exactly for LeNet's 5 -> 3; approximately otherwise):

* entering the small phase (from the initialisation): ``w' = s^2 * interp(w, k')``;
* leaving it: ``w = interp(w', k) / s^2`` — convolution's scaling property: a sum over ``s^2`` times fewer taps
  on a ``1/s`` times coarser grid approximates the same integral.

SGD momentum buffers are mapped like their weights. Biases are unchanged.

Members
-------
KernelRescaler
    Records a model's full-resolution geometry and switches it between the phases in place.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["KernelRescaler"]


def _is_conv(m):
    return isinstance(m, nn.Conv2d)


def _resize(w: torch.Tensor, size, gain: float) -> torch.Tensor:
    """``gain * interp(w, size)`` over the last two dims (bilinear, aligned corners)."""
    shape = w.shape
    flat = w.reshape(-1, 1, shape[-2], shape[-1]).to(torch.float32)
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=True) * gain
    return out.reshape(*shape[:-2], *size).to(w.dtype)


class KernelRescaler:
    """Kernel rescaling of ``model`` for inputs of ``input_shape`` (``C, H, W``) by ``factor`` (module docstring).

    Members
    -------
    small : bool
        Whether the model is in the small phase.
    shrink(optimizer=None, transform=True), grow(optimizer=None), downsample(x)
    """

    def __init__(self, model: nn.Module, factor: int, input_shape):
        if not isinstance(factor, int) or factor < 2:
            raise ValueError(f"Kernel rescaling factor must be an integer >= 2, not {factor!r}")
        self.model, self.s, self.input_shape = model, factor, tuple(input_shape)
        self.small = False
        self.convs = {}    # name -> (module, full kernel, padding, out_hw target in the small phase)
        self.linears = {}  # name -> (module, (C, h, w) of the full map, (h', w') of the small map)
        full = self._trace(self.input_shape)
        for name, m in model.named_modules():
            if _is_conv(m):
                k = tuple(m.kernel_size)
                small_k = tuple(1 if kk == 1 else math.ceil(kk / factor) for kk in k)
                if any(kk > 1 and sk == 1 for kk, sk in zip(k, small_k)):
                    raise ValueError(f"Kernel rescaling by {factor} would shrink {name}'s {k} kernel to 1x1")
                target = tuple(math.ceil(o / factor) for o in full[name][1])
                self.convs[name] = (m, k, tuple(m.padding), small_k,
                                    tuple(math.ceil(p / factor) for p in m.padding), target)
        self._hooks = []
        for name, (m, *_rest, target) in self.convs.items():
            self._hooks.append(m.register_forward_hook(self._crop_hook(target)))
        # Linear layers that flatten a map: found by the last 4-D output before them.
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and full[name][0] is not None:
                c, h, w = full[name][0]
                if c * h * w == m.in_features and h * w > 1:
                    self.linears[name] = [m, (c, h, w), None]

    def _crop_hook(self, target):
        def hook(module, inputs, output):
            if not self.small:
                return None
            return output[..., :target[0], :target[1]]
        return hook

    def _trace(self, shape, stub_linears=False):
        """Per module name: (last 4-D map ``C, h, w`` before a linear layer, output ``h, w`` of a conv)."""
        seen = {"last": None}
        record = {}
        hooks = []
        for name, m in self.model.named_modules():
            if len(list(m.children())) == 0 and not isinstance(m, nn.Linear):
                def after(mod, i, o, name=name):
                    if isinstance(o, torch.Tensor) and o.dim() == 4:
                        seen["last"] = tuple(o.shape[1:])
                        record[name] = (None, tuple(o.shape[2:]))
                hooks.append(m.register_forward_hook(after))
            if isinstance(m, nn.Linear):
                def before(mod, i, name=name):
                    record[name] = (seen["last"], None)
                    if stub_linears and i[0].shape[-1] != mod.in_features:
                        return (torch.zeros(i[0].shape[0], mod.in_features),)
                    return None
                hooks.append(m.register_forward_pre_hook(before))
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(torch.zeros((1,) + tuple(shape)))
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        return record

    @property
    def small_input_shape(self):
        c, h, w = self.input_shape
        return (c, math.ceil(h / self.s), math.ceil(w / self.s))

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the current phase sees them (area average to ``ceil(H/s)`` in the small phase)."""
        if not self.small:
            return x
        return F.adaptive_avg_pool2d(x, (math.ceil(x.shape[-2] / self.s), math.ceil(x.shape[-1] / self.s)))

    @staticmethod
    def _set_weight(module, new, optimizer, gain_map):
        """Give ``module`` a new weight Parameter (autograd caches a leaf's shape, so a resized weight must be a
        new tensor), in the optimizer's groups in place of the old one, with its momentum mapped."""
        old = module.weight
        param = nn.Parameter(new.contiguous(), requires_grad=old.requires_grad)
        module.weight = param
        if isinstance(getattr(module, "key", None), str):  # a fixed-point layer: a new device residency key
            base, _, count = module.key.partition("|rescaled")
            module.key = f"{base}|rescaled{int(count or 0) + 1}"
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["params"] = [param if p is old else p for p in group["params"]]
            state = optimizer.state.pop(old, None)
            if state is not None:
                if state.get("momentum_buffer") is not None:
                    state["momentum_buffer"] = gain_map(state["momentum_buffer"])
                optimizer.state[param] = state

    def shrink(self, optimizer=None, transform: bool = True) -> None:
        """Enter the small phase; ``transform``: map the weights (else only set their shapes, for a resume whose
        checkpoint is loaded next)."""
        if self.small:
            return
        s2 = float(self.s ** 2)
        for m, k, pad, small_k, small_pad, _ in self.convs.values():
            if small_k != k:
                new = (_resize(m.weight.data, small_k, s2) if transform
                       else torch.zeros(*m.weight.shape[:2], *small_k))
                self._set_weight(m, new, optimizer, lambda t, sk=small_k: _resize(t, sk, s2))
                m.kernel_size = small_k
            m.padding = small_pad
        self.small = True
        if self.linears:
            record = self._trace(self.small_input_shape, stub_linears=True)
            for name, entry in self.linears.items():
                m, (c, h, w), _ = entry
                small_hw = record[name][0][1:]
                entry[2] = small_hw
                view = m.weight.data.reshape(m.out_features, c, h, w)
                new = _resize(view, small_hw, s2) if transform else torch.zeros(m.out_features, c, *small_hw)
                self._set_weight(m, new.reshape(m.out_features, -1), optimizer,
                                lambda t, c=c, h=h, w=w, hw=small_hw, o=m.out_features:
                                _resize(t.reshape(o, c, h, w), hw, s2).reshape(o, -1))
                m.in_features = c * small_hw[0] * small_hw[1]

    def grow(self, optimizer=None) -> None:
        """Leave the small phase: kernels back to full size, ``interp / s^2``."""
        if not self.small:
            return
        inv = 1.0 / self.s ** 2
        for m, k, pad, small_k, _, _ in self.convs.values():
            if small_k != k:
                self._set_weight(m, _resize(m.weight.data, k, inv), optimizer,
                                lambda t, k=k: _resize(t, k, inv))
                m.kernel_size = k
            m.padding = pad
        for name, (m, (c, h, w), small_hw) in self.linears.items():
            o = m.out_features
            up = lambda t, o=o, c=c, hw=small_hw, h=h, w=w: _resize(t.reshape(o, c, *hw), (h, w), inv).reshape(o, -1)
            self._set_weight(m, up(m.weight.data), optimizer, up)
            m.in_features = c * h * w
        self.small = False
