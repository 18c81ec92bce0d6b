"""Convolution mode on the host: how the driver sends the planner's convolution items, and the views the layers
pass (``sim/conv.py``, ``docs/protocol.md`` §4.10).

A layer hands ``backend.gemm`` the materialized A *and* a :class:`fxtrain.sim.conv.ConvView` of it (its raw
quantized input, the geometry, a key and a content digest). The emulators ignore the view. The driver
(:class:`fxtrain.host.device.Device`) passes it to the planner, which uses it iff the device reports the expander
(IDENTIFY FEATURES) and the map fits the B memory next to the GEMM's B blocks
(:func:`fxtrain.sim.planner.conv_fits`); then the map crosses the link once per key and digest (WRITE_B frames)
and the A chunks are generated on the device (EXPAND frames). The result is bit for bit the plain path's.

Recovery: EXPAND is idempotent (it writes A entries from the B memory); the driver forgets residency on any
failure as for every other command and finishes a failed GEMM on the plain one-request-at-a-time path, which
sends the materialized A (exact, just more bytes). That path is also the only one of a device without a receive
buffer (IDENTIFY rx_buffer 0), which therefore never uses convolution mode.

Members
-------
send_conv_item(pipe, config, item, counters) -> bool
    Send a :class:`~fxtrain.sim.schedule_items.WriteMap` / :class:`~fxtrain.sim.schedule_items.Expand` / map
    :class:`~fxtrain.sim.schedule_items.Reused` item down a pipeline; False for any other item.
with_digest(view) -> ConvView
    The view, with the content digest of its map filled in when it has none.
layer_view(x_q, fl, geometry, key, transposed) -> ConvView
    The view a convolution layer passes: ``x_q`` (N, C, H, W) on the activation grid of ``fl`` fractional bits
    (no digest yet).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..sim.conv import ConvGeometry, ConvView, fmap_pack
from ..sim.residency import content_digest
from ..sim.schedule_items import Expand, Reused, WriteMap
from ..sim.wire import Command

__all__ = ["send_conv_item", "with_digest", "layer_view", "CONV_COUNTERS"]

#: Host-side counters of convolution mode (added to ``Device.counters``).
CONV_COUNTERS = ("map_entries_sent", "map_entries_reused", "expands", "a_entries_expanded")


def with_digest(view):
    """``view``, with ``digest`` set to a content digest of its map when it is empty (so that a key reused for
    other contents costs a re-send, never a wrong result)."""
    if view.digest:
        return view
    return replace(view, digest=content_digest(np.asarray(view.x_raw, dtype=np.int64)))


def _add(counters, name, value):
    counters[name] = counters.get(name, 0) + value


def send_conv_item(pipe, config, item, counters):
    """Send one convolution-mode schedule item (module docstring) and count it; False if ``item`` is not one."""
    if isinstance(item, WriteMap):
        entries = fmap_pack(config, item.view.x_raw)
        pipe.send_entries(config, "B", item.addr, entries)
        _add(counters, "map_entries_sent", len(entries))
    elif isinstance(item, Expand):
        pipe.send(Command.EXPAND, item.args(config))
        _add(counters, "expands", 1)
        _add(counters, "a_entries_expanded", item.entries)
    elif isinstance(item, Reused) and item.which == "map":
        _add(counters, "map_entries_reused", item.entries)
    else:
        return False
    return True


def layer_view(x_q, fl, geometry, key, transposed):
    """The :class:`ConvView` of a convolution layer's input ``x_q`` (a float tensor (N, C, H, W) on the grid of
    ``fl`` fractional bits, so ``x_q * 2**fl`` are the raw integers im2col reads), ``geometry`` the layer's
    ``(kernel_size, stride, padding)`` pairs, ``key`` its residency key. The digest is left for the driver to fill
    in (:func:`with_digest`) when it uses the view: the emulators, which ignore views, never pay for it."""
    import torch

    x_raw = (x_q.detach().to(torch.float64) * 2.0 ** fl).to(torch.int64).numpy()
    kernel_size, stride, padding = geometry
    geom = ConvGeometry.of(x_raw.shape, kernel_size, stride, padding)
    return ConvView(x_raw, geom, transposed, key)
