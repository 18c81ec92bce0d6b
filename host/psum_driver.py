"""The driver's one-request-at-a-time path for a K-split GEMM on a device with a partial-sum memory.

:meth:`fxtrain.host.device.Device.gemm` sends the planner's chunk-outer schedule (``sim/planner.py``, *Partial-sum
memory*) pipelined; after a link fault it finishes the GEMM here, one exchange at a time, in the same order and
with the same recovery rules as the plain path (``host/device.py``, *Recovery*): per group of tiles
(:meth:`fxtrain.sim.planner.CommandPlanner.psum_groups`, from the first tile not received yet), per chunk, per
tile: a RUN with CLEAR or LOAD, DRAIN or SAVE and the tile's slot, its operands confirmed right before it
(``Device._run``), and READ_RESULT after its draining run. A RUN that may have executed (no valid answer) leaves
the group's partial sums unknown: the group restarts from its first chunk with its tiles not read yet (the tiles
already read are not drained again, so the lanes stay where the golden model has them). Results are those of the
plain schedule bit for bit: the drains come in the plain tile order.

Members
-------
chunk_outer(device, plan, out, shift, mode, b_scope)
    Finish ``plan``'s tiles from ``out.received`` on.
"""

from __future__ import annotations

from ..sim.payloads import RUN_DRAIN, decode_result, result_bytes
from ..sim.wire import Command

__all__ = ["chunk_outer"]


def _group_runs(device, plan, out, shift, mode, b_scope, tiles):
    """Play the chunk-outer runs of ``tiles`` (``[(slot, (tm, tn))]``), reading each tile after its drain."""
    result_len = result_bytes(device.config)
    for chunk in plan.chunks:
        flags = plan.psum_flags(chunk)
        for slot, (tm, tn) in tiles:
            device._run(shift, mode, ("A", device._gemm_id, tm, chunk.k0), plan.a_block(out.ap, tm, chunk),
                        b_scope + (tn, chunk.k0), plan.b_block(out.bp, tn, chunk), flags, slot)
            if flags & RUN_DRAIN:
                out.place_tile(*decode_result(device.config,
                                              device._exchange(Command.READ_RESULT, expect_len=result_len)))


def chunk_outer(device, plan, out, shift, mode, b_scope):
    """The tiles of ``plan`` not received yet (``out.received`` on), chunk-outer, one exchange at a time (module
    docstring). Raises :class:`fxtrain.host.device.DeviceError` when a group's runs go unanswered in every
    attempt."""
    from .device import DeviceError, _Unanswered

    for first, count in device.planner.psum_groups(plan):
        why = None
        for attempt in range(1 + device.retries):
            if first + count <= out.received:
                break
            if attempt:
                device.counters["retries"] += 1
                device._resync()
            tiles = [(slot, plan.tiles[first + slot]) for slot in range(count) if first + slot >= out.received]
            try:
                _group_runs(device, plan, out, shift, mode, b_scope, tiles)
            except _Unanswered as error:
                why = error
                continue
            break
        else:
            raise DeviceError(f"RUN failed on {device.transport.name}: unanswered in each of {1 + device.retries} "
                              f"attempts at its group of tiles {first}..{first + count - 1} ({why})")
