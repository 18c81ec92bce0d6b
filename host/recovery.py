"""The host driver's one-request-at-a-time path and its recovery rules: how :class:`fxtrain.host.device.Device`
finishes a GEMM after a link fault (or runs it when it cannot pipeline), one exchange at a time.

Recovery (``docs/protocol.md`` §5.2). The driver's beliefs about the device (which operand chunks are resident, the
rounding registers, the lanes' position) are recorded only after the device acknowledged the command that
established them, and all of them are dropped whenever an attempt fails (no answer, a corrupted answer, an error
status) or the link is resynchronised: a mangled frame may have written operand entries or lanes anywhere before its
CRC was checked (the rounding registers change only through a CRC-checked SET_ROUNDING, so only a failed
SET_ROUNDING or SOFT_RESET drops that belief). Everything a RUN depends on is confirmed again, and re-sent where
needed, right before it is sent; a RUN the device did not execute is re-sent that way, a RUN that may have executed
restarts its tile from the CLEAR run, and a RUN_TILES without a valid answer is redone whole (its tiles are
placed only from an intact answer). The lanes are kept at the golden model's position (seeds advanced by ``rows``
per acknowledged drain, re-loaded with SET_SEEDS after any failure), and a ``gemm`` that raises leaves them where
they were before it. So every ``gemm`` either equals the golden model bit for bit or raises :class:`DeviceError` (up
to CRC-16 collisions of corrupted frames).

Partial-sum memory: :meth:`fxtrain.host.device.Device.gemm` sends the planner's chunk-outer schedule
(``sim/planner.py``, *Partial-sum memory*) pipelined; after a link fault :func:`chunk_outer` finishes the GEMM one
exchange at a time, in the same order and with the same recovery rules as the plain path (above): per group of tiles
(:meth:`fxtrain.sim.planner.CommandPlanner.psum_groups`, from the first tile not received yet), per chunk, per tile:
a RUN with CLEAR or LOAD, DRAIN or SAVE and the tile's slot, its operands confirmed right before it
(:func:`confirmed_run`), and READ_RESULT after its draining run. A RUN that may have executed (no valid answer)
leaves the group's partial sums unknown: the group restarts from its first chunk with its tiles not read yet (the
tiles already read are not drained again, so the lanes stay where the golden model has them). Results are those of
the plain schedule bit for bit: the drains come in the plain tile order.

Members
-------
one_at_a_time(device, plan, out, shift, mode, b_scope)
    Finish ``plan``'s tiles from ``out.received`` on (RUN_TILES groups, the chunk-outer K-split or tile by tile).
chunk_outer(device, plan, out, shift, mode, b_scope)
    The chunk-outer K-split part of it (an engine with a partial-sum memory).
confirmed_run, confirm, resident, write_entries, tile_runs, tile_group
    Its steps: a RUN or RUN_TILES whose operands, rounding registers and lanes are confirmed right before it is
    sent; operand blocks written unless resident.
"""

from __future__ import annotations

from ..sim.payloads import (RUN_DRAIN, WRITE_HEADER, decode_result, decode_tiles, pack_values, result_bytes,
                            run_args, run_tiles_args, value_bytes, write_frames)
from ..sim.residency import content_digest
from ..sim.wire import Command
from .device_errors import DeviceError, NotExecuted, Unanswered

__all__ = ["one_at_a_time", "chunk_outer", "confirmed_run", "confirm", "resident", "write_entries", "tile_runs",
           "tile_group"]


def write_entries(device, cmd, addr, entries):
    """Write ``entries`` at ``addr``; True if no attempt failed after the first frame's acknowledgement (so
    every entry holds what the acknowledged frames wrote)."""
    vb = value_bytes(device.config)
    which = "A" if cmd == Command.WRITE_A else "B"
    epoch = None
    for start, count in write_frames(device.config, which, len(entries), device.identity.rx_buffer):
        payload = WRITE_HEADER.pack(addr + start, count) + pack_values(entries[start:start + count], vb)
        device._exchange(cmd, payload, expect_len=0)
        epoch = device._epoch if epoch is None else epoch
    return epoch == device._epoch


def resident(device, mem, cmd, key, block, sent_counter, reused_counter=None):
    """Address of ``block`` in ``mem``, written first unless it is resident; recorded only once written."""
    digest = content_digest(block)
    if not device.residency:
        mem.clear()
    addr = mem.lookup(key, digest)
    if addr is not None:
        if reused_counter:
            device.counters[reused_counter] += len(block)
        return addr
    for _ in range(1 + device.retries):
        addr = mem.reserve(key, len(block))
        intact = write_entries(device, cmd, addr, block)
        device.counters[sent_counter] += len(block)
        if intact:
            mem.commit(key, digest, addr, len(block))
            return addr
    raise DeviceError(f"{cmd.name} of {len(block)} entries on {device.transport.name}: a link error hit every "
                      f"one of {1 + device.retries} attempts")


def confirmed_run(device, shift, mode, a_key, a_block, b_key, b_block, flags, slot=0):
    """One RUN (partial-sum ``slot``) whose operands, rounding registers and lanes are confirmed right before
    it is sent.

    Re-sent (after confirming everything again) while the device reports it did not execute it; raises
    :class:`Unanswered` when it may have executed (the caller restarts the tile)."""
    why = None
    for attempt in range(1 + device.retries):
        if attempt:
            device.counters["retries"] += 1
            if why is not None:
                device._resync()
        addrs = confirm(device, shift, mode, a_key, a_block, b_key, b_block, rounding=bool(flags & RUN_DRAIN))
        if addrs is None:
            why = None               # a link error after something was confirmed: confirm everything again
            continue
        a_addr, b_addr = addrs
        try:
            device._attempt(Command.RUN, run_args(a_addr, b_addr, len(a_block), flags, slot), 0)
        except NotExecuted as error:
            why = error
            continue
        device.counters["runs"] += 1
        if flags & RUN_DRAIN:
            device._lane_advances += device.config.rows
        return
    raise DeviceError(f"RUN failed on {device.transport.name} after {attempt + 1} attempt(s): "
                      f"{why or 'a link error while confirming its operands every time'}")


def confirm(device, shift, mode, a_key, a_block, b_key, b_block, rounding):
    """Confirm what a RUN or RUN_TILES needs right before it is sent: lanes and rounding registers (when
    ``rounding``: the run drains), then the A and B blocks (resident or written). Returns ``(a_addr, b_addr)``,
    or None when a link error happened on the way (the device's state is then unknown again)."""
    epoch = device._epoch
    if rounding:
        device._sync_lanes()
        device._sync_rounding(shift, mode)
    a_addr = resident(device, device._a_mem, Command.WRITE_A, a_key, a_block, "a_entries_sent")
    b_addr = resident(device, device._b_mem, Command.WRITE_B, b_key, b_block, "b_entries_sent", "b_entries_reused")
    return None if device._epoch != epoch else (a_addr, b_addr)


def tile_runs(device, shift, mode, runs):
    """The runs of one output tile, then its READ_RESULT; restarted from its first (CLEAR) run when a RUN
    went unanswered. Returns ``(c, saturated)`` of the tile."""
    cfg = device.config
    result_len = result_bytes(cfg)
    for attempt in range(1 + device.retries):
        if attempt:
            device.counters["retries"] += 1
            device._resync()
        try:
            for run in runs:
                confirmed_run(device, shift, mode, *run)
        except Unanswered as error:
            why = error
            continue
        return decode_result(cfg, device._exchange(Command.READ_RESULT, expect_len=result_len))
    raise DeviceError(f"RUN failed on {device.transport.name}: unanswered in each of {attempt + 1} attempts "
                      f"at its tile ({why})")


def tile_group(device, shift, mode, a_key, a_block, b_key, b_block, n_tiles):
    """One RUN_TILES whose operands, rounding registers and lanes are confirmed right before it is sent;
    redone whole (after confirming everything again) when it failed in any way. Returns its ``n_tiles``
    tiles ``[(c, saturated), ...]``."""
    why = None
    k = len(a_block)
    for attempt in range(1 + device.retries):
        if attempt:
            device.counters["retries"] += 1
            if why is not None:
                device._resync()
        addrs = confirm(device, shift, mode, a_key, a_block, b_key, b_block, rounding=True)
        if addrs is None:
            why = None               # a link error after something was confirmed: confirm everything again
            continue
        a_addr, b_addr = addrs
        try:
            payload = device._attempt(Command.RUN_TILES, run_tiles_args(a_addr, b_addr, k, k, n_tiles),
                                      n_tiles * result_bytes(device.config))
        except (NotExecuted, Unanswered) as error:
            why = error
            continue
        device.counters["runs"] += n_tiles
        device._lane_advances += n_tiles * device.config.rows
        return decode_tiles(device.config, payload)
    raise DeviceError(f"RUN_TILES failed on {device.transport.name} after {attempt + 1} attempt(s): "
                      f"{why or 'a link error while confirming its operands every time'}")


def one_at_a_time(device, plan, out, shift, mode, b_scope):
    """The tiles not received yet, one exchange at a time (the recovery rules of the module docstring)."""
    if plan.groups is not None:
        (chunk,) = plan.chunks
        for group in plan.groups:
            if group.first < out.received:
                continue
            tiles = tile_group(device, shift, mode, ("A", device._gemm_id, group.tm, 0),
                               plan.a_block(out.ap, group.tm, chunk), b_scope + ("tiles", group.tn0, group.count),
                               plan.b_block(out.bp, group.tn0, chunk, group.count), group.count)
            for tile in tiles:
                out.place_tile(*tile)
        return
    if device.planner.uses_psum(plan):
        chunk_outer(device, plan, out, shift, mode, b_scope)
        return
    for tm, tn in plan.tiles[out.received:]:
        runs = [(("A", device._gemm_id, tm, chunk.k0), plan.a_block(out.ap, tm, chunk),
                 b_scope + (tn, chunk.k0), plan.b_block(out.bp, tn, chunk), plan.flags(chunk))
                for chunk in plan.chunks]
        out.place_tile(*tile_runs(device, shift, mode, runs))


def _group_runs(device, plan, out, shift, mode, b_scope, tiles):
    """Play the chunk-outer runs of ``tiles`` (``[(slot, (tm, tn))]``), reading each tile after its drain."""
    result_len = result_bytes(device.config)
    for chunk in plan.chunks:
        flags = plan.psum_flags(chunk)
        for slot, (tm, tn) in tiles:
            confirmed_run(device, shift, mode, ("A", device._gemm_id, tm, chunk.k0), plan.a_block(out.ap, tm, chunk),
                          b_scope + (tn, chunk.k0), plan.b_block(out.bp, tn, chunk), flags, slot)
            if flags & RUN_DRAIN:
                out.place_tile(*decode_result(device.config,
                                              device._exchange(Command.READ_RESULT, expect_len=result_len)))


def chunk_outer(device, plan, out, shift, mode, b_scope):
    """The tiles of ``plan`` not received yet (``out.received`` on), chunk-outer, one exchange at a time (module
    docstring). Raises :class:`.device_errors.DeviceError` when a group's runs go unanswered in every
    attempt."""
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
            except Unanswered as error:
                why = error
                continue
            break
        else:
            raise DeviceError(f"RUN failed on {device.transport.name}: unanswered in each of {1 + device.retries} "
                              f"attempts at its group of tiles {first}..{first + count - 1} ({why})")
