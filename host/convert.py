"""Conversion of a float model to fixed point, the torch.ao way: a mapping table and ``from_float`` constructors.

:func:`convert` walks the model and swaps every module whose type is a key of the mapping
(:data:`DEFAULT_MAPPING`: ``nn.Conv2d -> FixedConv2d``, ``nn.Linear -> FixedLinear``) for
``mapping[type].from_float(module, fixed, offload, name)``, where ``name`` is the module's qualified name in the
model (``"conv1"``, ``"features.0"``). The name is the residency key of the layer's weights on a device and selects
per-layer numerics (``layer_configs``); it depends only on the model's structure, never on how many layers were
converted before in the process. All converted layers share one :class:`~fxtrain.host.layers.Offload` (backend
and quantizer generator), which is attached to the model and read back with :func:`get_offload`.

Members
-------
DEFAULT_MAPPING : dict
    Float module type to fixed-point module type.
convert
    Convert a model in place; returns it.
get_offload
    The :class:`~fxtrain.host.layers.Offload` attached to a converted model.
offload_stats
    Sum of the host-side counters of the converted layers.
"""

from __future__ import annotations

import torch.nn as nn

from .backend import Backend
from .layers import FixedConfig, FixedConv2d, FixedLinear, Offload, _FixedMixin

__all__ = ["DEFAULT_MAPPING", "convert", "get_offload", "offload_stats"]

DEFAULT_MAPPING = {nn.Conv2d: FixedConv2d, nn.Linear: FixedLinear}

#: Attribute of a converted model that holds its Offload.
_OFFLOAD_ATTR = "fxtrain_offload"


def convert(model: nn.Module, backend: Backend, fixed: "FixedConfig | None" = None, *, seed: int = 0,
            mapping: "dict | None" = None, layer_configs: "dict | None" = None, **options) -> nn.Module:
    """Replace (in place) every module of ``model`` whose type is in ``mapping`` by its fixed-point twin, keeping
    the parameters; returns ``model`` with the :class:`~fxtrain.host.layers.Offload` attached.

    Parameters
    ----------
    model : nn.Module
    backend : Backend
        Where the GEMMs of every converted layer go.
    fixed : FixedConfig, optional
        Numerics of every layer; default ``FixedConfig(wl=backend.config.wl, **options)``.
    seed : int
        Seeds the host quantizers' generator.
    mapping : dict, optional
        Float module type to a class with ``from_float(module, fixed, offload, name)``; default
        :data:`DEFAULT_MAPPING`. Exact types are matched (a subclass of ``nn.Linear`` is left alone unless named).
    layer_configs : dict, optional
        Qualified name to the :class:`FixedConfig` of that layer, or None to leave it in float.
    options
        :class:`FixedConfig` fields (``weights="16.14"``, ``activations``, ``gradients``, ``rounding``,
        ``master_weights``, output formats), when ``fixed`` is not given.

    Raises ValueError for a convolution it cannot run (groups, dilation, non-zero padding modes), a name in
    ``layer_configs`` that is not a convertible module, or numerics the backend's engine cannot take.
    """
    if fixed is None:
        fixed = FixedConfig(**{"wl": backend.config.wl, **options}) if isinstance(backend, Backend) else None
    elif options:
        raise TypeError(f"Pass either fixed= or FixedConfig options, not both ({sorted(options)})")
    offload = Offload(backend, seed)
    offload.check(fixed)
    mapping = DEFAULT_MAPPING if mapping is None else mapping
    layer_configs = dict(layer_configs or {})
    for name, module in list(model.named_modules()):
        target = mapping.get(type(module))
        if target is None or not name:
            continue
        layer_fixed = layer_configs.pop(name, fixed)
        if layer_fixed is None:
            continue
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child_name, target.from_float(module, offload.check(layer_fixed), offload, name))
    if layer_configs:
        raise ValueError(f"layer_configs names modules that convert did not find: {sorted(layer_configs)}")
    setattr(model, _OFFLOAD_ATTR, offload)
    return model


def get_offload(model: nn.Module) -> Offload:
    """The :class:`~fxtrain.host.layers.Offload` that :func:`convert` attached to ``model``; ValueError if the model
    was not converted."""
    offload = getattr(model, _OFFLOAD_ATTR, None)
    if offload is None:
        raise ValueError(f"Model {type(model).__name__} has not been converted (fxtrain.host.convert.convert)")
    return offload


def offload_stats(model: nn.Module) -> dict:
    """Sum of the ``stats`` counters of all fixed-point layers in ``model``."""
    total = {}
    for module in model.modules():
        if isinstance(module, _FixedMixin):
            for key, value in module.stats.items():
                total[key] = total.get(key, 0) + value
    return total
