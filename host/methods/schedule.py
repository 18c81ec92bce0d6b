"""Precision schedule: operand formats per epoch range.

Spec string: comma-separated ``EPOCH:WEIGHTS/ACTIVATIONS/GRADIENTS`` entries, each format ``WL.FL``; an entry holds
from its (0-based) epoch until the next entry's. The first entry must start at epoch 0, epochs must increase.
Example: ``0:8.6/8.4/8.6,2:16.14/16.10/16.14`` — 8-bit operands for epochs 0 and 1, 16-bit after.

The result formats of the three GEMMs keep the engine's word length with the fractional length of the new
activation / gradient formats (the default of :class:`fxtrain.host.layers.FixedConfig`), so the shifts change
with the phase. The quantizers' random stream (the model's ``Offload``) continues across a switch.

Members
-------
parse_schedule
    Spec to a tuple of ``(epoch, (weights, activations, gradients))``.
formats_at
    The formats of an epoch.
apply_formats
    Switch a :class:`FixedConfig` (shared by the converted layers) to new operand formats in place.
"""

from __future__ import annotations

import dataclasses

from ...sim.fixedpoint import FixedFormat

__all__ = ["parse_schedule", "formats_at", "apply_formats"]


def parse_schedule(spec: str):
    """``((epoch, (w, a, g)), ...)`` of a spec; ValueError naming the bad entry."""
    entries = []
    for item in str(spec).split(","):
        item = item.strip()
        try:
            epoch_text, formats_text = item.split(":")
            epoch = int(epoch_text)
            formats = tuple(str(FixedFormat.parse(f.strip()))
                            for f in formats_text.split("/"))
        except ValueError as error:
            raise ValueError(f"Precision schedule entry {item!r} is not EPOCH:W/A/G with WL.FL formats "
                             f"({error})") from None
        if len(formats) != 3:
            raise ValueError(f"Precision schedule entry {item!r} needs three formats W/A/G, not {len(formats)}")
        if entries and epoch <= entries[-1][0]:
            raise ValueError(f"Precision schedule epochs must increase: {epoch} after {entries[-1][0]}")
        entries.append((epoch, formats))
    if not entries or entries[0][0] != 0:
        raise ValueError(f"Precision schedule {spec!r} must start at epoch 0")
    return tuple(entries)


def formats_at(schedule, epoch: int):
    """``(weights, activations, gradients)`` in force at 0-based ``epoch``."""
    current = schedule[0][1]
    for start, formats in schedule:
        if epoch >= start:
            current = formats
    return current


def apply_formats(fixed, formats) -> bool:
    """Set ``fixed``'s operand formats (validated like a new config); True if they changed."""
    weights, activations, gradients = (FixedFormat.parse(f) for f in formats)
    if (fixed.weights, fixed.activations, fixed.gradients) == (weights, activations, gradients):
        return False
    new = dataclasses.replace(fixed, weights=weights, activations=activations, gradients=gradients,
                              forward_out=None, grad_input_out=None, grad_weight_out=None)
    fixed.__dict__.update(new.__dict__)
    return True
