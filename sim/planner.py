"""The GEMM planner: how a whole ``M x K x N`` GEMM becomes engine commands (``docs/numerics.md`` §6,
``docs/protocol.md`` §5). Written once; the host driver sends the schedule (:class:`fxtrain.host.device.Device`),
the golden model plays it (:func:`fxtrain.sim.engine.gemm_via_engine`) and the time model counts it
(:class:`fxtrain.host.traffic.DriverReplay`).

The tiling of a GEMM (padding, tiles ``tm`` outer / ``tn`` inner, K chunks with clear/drain flags, RUN_TILES
groups when K fits one chunk, chunk-outer groups) is :mod:`.gemm_plan`; the items of a schedule are
:mod:`.schedule_items`; residency bookkeeping is :mod:`.residency`.

Tile loop (``docs/protocol.md`` §3, RUN_TILES): when K fits one chunk, each group of tiles
(:attr:`.gemm_plan.GemmPlan.groups`) goes as its B entries written as one block (unless resident), then one
RUN_TILES that runs every tile of the group and answers with their results. A K-split (``K > chunk``) keeps the
per-tile RUN / READ_RESULT schedule below.

Schedule (:class:`CommandPlanner`): per run, the A chunk (columns ``k0..k1`` of tile row ``tm``) and the B chunk
(rows ``k0..k1`` of tile column ``tn``) are written unless already resident, then the run; after a tile's last run
its result is read. Residency is the planner's belief of the operand memories: each memory is managed as keyed
address ranges with LRU eviction (:class:`.residency.ResidentMemory`; A's of ``depth`` entries, B's of ``b_depth``);
A chunks are keyed by ``(gemm, tm, k0)`` (sent once per tile row, reused for every ``tn``), B chunks by the caller's
``b_key`` (across calls) or by the call, and every key carries a content digest, so a stale key costs a re-send,
never a wrong result. A consumer that fails to execute a command must call :meth:`CommandPlanner.forget` (the
device's memories are then unknown).

Partial-sum memory (``EngineConfig.psum_slots >= 1``, ``sim/engine.py``): a K-split goes *chunk-outer*. The tiles
are cut into groups of at most ``psum_slots`` consecutive tiles of the plain order
(:meth:`.gemm_plan.GemmPlan.psum_groups`; fewer when the B memory, less the feature map in convolution mode, cannot
hold one chunk of every tile column of the group); per group, per chunk, per tile of the group: the A chunk (kept
resident across the tile row's consecutive tiles), the B chunk, a :class:`.schedule_items.Run` with CLEAR (first
chunk) or LOAD and DRAIN (last chunk) or SAVE on the tile's slot (its index in the group), and after a draining run
its READ_RESULT. The partial sums stay exact in the slots; the rounded drains come in the plain tile order, so the
lanes give every tile the words ``tiled_gemm`` gives it: bit for bit the plain schedule's result, with every operand
chunk sent once per group instead of once per tile. Resume (``first_tile``) restarts the group holding
``first_tile`` from its first chunk with only its tiles from ``first_tile`` on (a failed group's partial sums are
unknown; tiles already read are not drained again).

Convolution mode (``a_view``, :mod:`.conv`; only on a device with the expander and when :func:`conv_fits`): A is
given as a feature map and a geometry. The map is a keyed B-memory range (``("map", view.key)``, the view's content
digest) written with WRITE_B (:func:`.conv.fmap_pack`) unless resident, so a map written for a layer's forward GEMM
serves its weight-gradient GEMM too. A chunks become :class:`.schedule_items.Expand` items instead of A writes: in
the tile loop one EXPAND fills ``blocks`` consecutive tile rows' chunks (as many as the A depth holds, each then
keyed as its tile row), in the K-split one EXPAND per (tile row, chunk). The map is looked up again before every
EXPAND (LRU may have evicted it since), so the schedule is correct whatever the residency. Result bits are those of
the plain path: the device builds the very A the host would have sent. When the whole map does not fit next to
the GEMM's B blocks but the GEMM is a forward-orientation tile loop (no K-split), the map goes in *windows*
(:func:`conv_window_room`, :func:`.conv.map_window`): each EXPAND gets the images its tile rows read as a map of
their own (keyed by the image range), as many tile rows per EXPAND (at most what the A memory holds) as such a
window fits the B memory. A transposed (weight-gradient) K-split played chunk-outer takes windows too: a chunk's K
range is a range of output positions, whose images are the window every tile of the group shares in that chunk
pass (its B room is left free by the tile groups).

Members
-------
CommandPlanner
    The schedule of successive GEMMs, with residency and the rounding registers (``uses_psum``, ``psum_groups``:
    the chunk-outer K-split on an engine with a partial-sum memory).
conv_fits, conv_window_room
    Convolution mode: whether a GEMM can take its A from the whole feature map, and how many B entries its map
    windows may take.
"""

from __future__ import annotations

from dataclasses import replace

from . import conv
from .payloads import RUN_DRAIN
from .residency import ResidentMemory
from .schedule_items import Expand, ReadResult, Reused, Run, RunTiles, SetRounding, WriteMap, WriteOperand

__all__ = ["CommandPlanner", "conv_fits", "conv_window_room"]


def conv_fits(config, plan, view):
    """Whether ``plan``'s GEMM can take its A from ``view`` (a :class:`.conv.ConvView`) on an engine of
    ``config``: the engine has the expander, the view's matrix has the plan's shape, and the feature map fits the
    B memory next to the largest B block the GEMM writes (else the map would be evicted at every tile row:
    the planner then falls back to sending A)."""
    if view is None:
        return False
    if tuple(view.shape) != (plan.m, plan.k):
        raise ValueError(f"Convolution view of shape {tuple(view.shape)} does not match the GEMM's A "
                         f"{plan.m} x {plan.k}")
    if not config.expander:
        return False
    if plan.groups is not None:
        largest = max(g.count for g in plan.groups) * plan.k
    else:
        largest = max(c.length for c in plan.chunks)
    return conv.fmap_entries(config, view.geom) + largest <= config.b_depth


def conv_window_room(config, plan, view, chunk_outer=False):
    """The B entries the map windows may take when ``plan``'s A comes from ``view`` in windows (module docstring);
    0 when windows cannot be used (no expander, a window that cannot fit).

    * Forward orientation, tile loop: the B memory less the GEMM's largest B block, provided the window of every
      single tile row fits it; each EXPAND then serves as many tile rows as its window fits
      (:meth:`CommandPlanner._window_blocks`).
    * Transposed orientation, a K-split played ``chunk_outer`` (partial sums): a chunk's K range is a range of
      output positions, so its window is the images they read, shared by every tile of the group in that chunk
      pass; the room is the widest chunk's window, provided one B chunk fits beside it (the tile groups then
      leave it free, :meth:`CommandPlanner.psum_groups`). A K-split without partial sums would change window at
      every run: no windows."""
    if view is None or not config.expander:
        return 0
    if view.transposed:
        if not chunk_outer:
            return 0
        widest = max(n1 - n0 for n0, n1 in (conv.window_images(view.geom, c.k0, c.k1) for c in plan.chunks))
        need = _window_entries(config, view.geom, widest)
        return need if need + max(c.length for c in plan.chunks) <= config.b_depth else 0
    if plan.groups is None:
        return 0
    room = config.b_depth - max(grp.count for grp in plan.groups) * plan.k
    widest = max(n1 - n0 for n0, n1 in (_row_window(config, plan, view.geom, tm, 1) for tm in range(plan.mt)))
    return room if _window_entries(config, view.geom, widest) <= room else 0


def _row_window(config, plan, geom, tm, blocks):
    """``(n0, n1)``: the images that tile rows ``tm .. tm + blocks − 1`` of a forward-orientation GEMM read."""
    return conv.window_images(geom, tm * config.rows, min((tm + blocks) * config.rows, plan.m))


def _window_entries(config, geom, images):
    """B entries of a window of ``images`` images of ``geom``'s map."""
    return conv.fmap_entries(config, replace(geom, n=images))


class CommandPlanner:
    """The command schedule of successive GEMMs on one device (module docstring).

    Parameters
    ----------
    config : EngineConfig
    residency : bool
        Keep operands resident (default). ``False`` sends the A and B chunk of every run.
    psum : bool
        Play K-split GEMMs chunk-outer through the partial-sum memory when the engine has one (default).
        ``False`` keeps the plain tile-by-tile schedule.

    Members
    -------
    a_mem, b_mem : ResidentMemory
    schedule(plan, rounding, *, b_key=None, digest=None, a_view=None)
        Generator of the schedule items of one GEMM. ``rounding`` is ``(shift, mode)`` (a ``SetRounding`` is
        issued when it differs from the last one, or always when ``None``); ``digest(which, index, chunk)``
        returns a content digest of an operand chunk (``None``: contents are what the keys say). Residency is
        recorded when a write is yielded: a consumer that fails to execute it must call :meth:`forget`.
        ``first_tile`` skips the tiles before it (a host resuming a GEMM after a failure). ``a_view``: A as a
        :class:`.conv.ConvView` (convolution mode, module docstring; used as :meth:`conv_source` says).
    conv_source(plan, a_view) -> (view, window)
        Whether the A of ``plan`` comes from the whole map, from map windows, or is sent.
    forget()
        Forget residency and the rounding registers (after a reset or any failed command).
    """

    def __init__(self, config, residency=True, psum=True):
        self.config = config
        self.residency = bool(residency)
        self.psum = bool(psum)
        self.a_mem = ResidentMemory(config.depth)
        self.b_mem = ResidentMemory(config.b_depth)
        self.rounding = None
        self._gemm_id = 0
        self._map_used = False

    def forget(self):
        self.a_mem.clear()
        self.b_mem.clear()
        self.rounding = None

    def _operand(self, mem, which, key, index, chunk, digest, count=1):
        value = None
        if digest is not None:
            value = tuple(digest(which, i, chunk) for i in range(index, index + count))
        if not self.residency:
            mem.clear()
        addr = mem.lookup(key, value)
        if addr is not None:
            return addr, Reused(which, chunk.length * count)
        addr = mem.allocate(key, value, chunk.length * count)
        return addr, WriteOperand(which, addr, index, chunk, count)

    def _map(self, view):
        """The map of ``view``: ``(f_base, item)``, the item a :class:`WriteMap` unless it is resident, then a
        :class:`Reused` the first time in this GEMM, else None."""
        key, entries = ("map", view.key), conv.fmap_entries(self.config, view.geom)
        if not self.residency:
            self.b_mem.clear()
        addr = self.b_mem.lookup(key, view.digest)
        if addr is not None:
            first, self._map_used = not self._map_used, True
            return addr, Reused("map", entries) if first else None
        self._map_used = True
        addr = self.b_mem.allocate(key, view.digest, entries)
        return addr, WriteMap(addr, entries, view)

    def _expanded(self, plan, view, tm, chunk, blocks=1, window=0):
        """The A chunk of tile row ``tm``: ``(a_addr, items)``, the items the map (unless resident) and an
        :class:`Expand` of ``blocks`` tile rows from ``tm`` (each recorded under its row's key), or a
        :class:`Reused` when the chunk is resident. ``window`` (B entries, :func:`conv_window_room`): the map is
        the window of the images the rows read (:func:`.conv.map_window`), with fewer rows if needed to fit."""
        key = ("A", self._gemm_id, tm, chunk.k0)
        if not self.residency:
            self.a_mem.clear()
        addr = self.a_mem.lookup(key, None)
        if addr is not None:
            return addr, [Reused("A", chunk.length)]
        row0, k0 = tm * self.config.rows, chunk.k0
        if window and view.transposed:      # the chunk's positions (K) read the window's images
            n0, n1 = conv.window_images(view.geom, chunk.k0, chunk.k1)
            view = conv.map_window(view, n0, n1)
            k0 -= n0 * view.geom.out_h * view.geom.out_w
        elif window:
            blocks = self._window_blocks(plan, view, tm, blocks, window)
            n0, n1 = _row_window(self.config, plan, view.geom, tm, blocks)
            view = conv.map_window(view, n0, n1)
            row0 -= n0 * view.geom.out_h * view.geom.out_w
        f_base, map_item = self._map(view)
        addr = self.a_mem.reserve(key, chunk.length * blocks)
        for b in range(blocks):
            self.a_mem.commit(("A", self._gemm_id, tm + b, chunk.k0), None, addr + b * chunk.length, chunk.length)
        expand = Expand(addr, f_base, row0, k0, chunk.length, blocks, view)
        return addr, [expand] if map_item is None else [map_item, expand]

    def _window_blocks(self, plan, view, tm, blocks, room):
        """The most tile rows (at most ``blocks``, at least 1) from ``tm`` whose map window fits ``room``
        entries (:func:`conv_window_room` guarantees one does)."""
        while blocks > 1:
            n0, n1 = _row_window(self.config, plan, view.geom, tm, blocks)
            if _window_entries(self.config, view.geom, n1 - n0) <= room:
                break
            blocks -= 1
        return blocks

    def schedule(self, plan, rounding, *, b_key=None, digest=None, first_tile=0, a_view=None):
        if rounding is None or rounding != self.rounding:
            yield SetRounding(rounding)
            self.rounding = rounding
        self._gemm_id += 1
        b_scope = ("B", b_key, (plan.k, plan.n)) if b_key is not None else ("B-call", self._gemm_id)
        view, window = self.conv_source(plan, a_view)
        self._map_used = False            # a resident map is reported (Reused) once per GEMM
        if plan.groups is not None:
            yield from self._tile_loop(plan, b_scope, digest, first_tile, view, window)
            return
        if self.uses_psum(plan):
            yield from self._chunk_outer(plan, b_scope, digest, first_tile, view, window)
            return
        for tm, tn in plan.tiles[first_tile:]:
            for chunk in plan.chunks:
                if view is not None:
                    a_addr, items = self._expanded(plan, view, tm, chunk)
                    yield from items
                else:
                    a_addr, item = self._operand(self.a_mem, "A", ("A", self._gemm_id, tm, chunk.k0), tm, chunk,
                                                 digest)
                    yield item
                b_addr, item = self._operand(self.b_mem, "B", b_scope + (tn, chunk.k0), tn, chunk, digest)
                yield item
                yield Run(a_addr, b_addr, chunk.length, plan.flags(chunk))
            yield ReadResult(tm, tn)

    def conv_source(self, plan, a_view):
        """``(view, window)``: where ``plan``'s A comes from in convolution mode: ``(a_view, 0)`` from its whole map
        (:func:`conv_fits`), ``(a_view, room)`` from map windows of at most ``room`` B entries
        (:func:`conv_window_room`), else ``(None, 0)`` (A is sent)."""
        if conv_fits(self.config, plan, a_view):
            return a_view, 0
        window = conv_window_room(self.config, plan, a_view, self.uses_psum(plan))
        return (a_view, window) if window else (None, 0)

    def uses_psum(self, plan):
        """Whether :meth:`schedule` plays ``plan`` chunk-outer through the partial-sum memory: a K-split GEMM on
        an engine with ``psum_slots >= 1`` (and ``psum`` on)."""
        return self.psum and self.config.psum_slots >= 1 and len(plan.chunks) > 1 and plan.groups is None

    def psum_groups(self, plan, view=None, window=0):
        """The chunk-outer tile groups of ``plan`` (:meth:`.gemm_plan.GemmPlan.psum_groups`; B room = ``b_depth``
        less the feature map of ``view`` when convolution mode is used, or less ``window`` entries for its map
        windows)."""
        used = window or (conv.fmap_entries(self.config, view.geom) if view is not None else 0)
        return plan.psum_groups(self.config.psum_slots, self.config.b_depth - used)

    def _a_chunk(self, plan, view, tm, chunk, digest, window=0):
        """The A chunk of tile row ``tm``: ``(a_addr, items)`` (an EXPAND with the map or its window before it, a
        write, or a :class:`Reused`)."""
        if view is not None:
            return self._expanded(plan, view, tm, chunk, window=window)
        a_addr, item = self._operand(self.a_mem, "A", ("A", self._gemm_id, tm, chunk.k0), tm, chunk, digest)
        return a_addr, [item]

    def _chunk_outer(self, plan, b_scope, digest, first_tile, view, window=0):
        """The partial-sum schedule of a K-split (module docstring): per group of tiles, per chunk, per tile of the
        group: A chunk, B chunk, a RUN with CLEAR or LOAD and DRAIN or SAVE of the tile's slot (its index in the
        group), and READ_RESULT after its draining run. Resume (``first_tile``): the group holding ``first_tile``
        starts again from its first chunk with its tiles from ``first_tile`` on (the partial sums of a group
        that failed are unknown; its tiles already read are not run again, so no drain is repeated), the later
        groups as planned."""
        for first, count in self.psum_groups(plan, view, window):
            if first + count <= first_tile:
                continue
            tiles = [(slot, plan.tiles[first + slot]) for slot in range(count) if first + slot >= first_tile]
            for chunk in plan.chunks:
                flags = plan.psum_flags(chunk)
                for slot, (tm, tn) in tiles:
                    a_addr, items = self._a_chunk(plan, view, tm, chunk, digest, window)
                    yield from items
                    b_addr, item = self._operand(self.b_mem, "B", b_scope + (tn, chunk.k0), tn, chunk, digest)
                    yield item
                    yield Run(a_addr, b_addr, chunk.length, flags, slot)
                    if flags & RUN_DRAIN:
                        yield ReadResult(tm, tn)

    def _tile_loop(self, plan, b_scope, digest, first_tile, view=None, window=0):
        """The RUN_TILES schedule of a GEMM without K-split (module docstring); a group is keyed by its first
        column and size, so a group resident from an earlier call with the same ``b_key`` is reused. In
        convolution mode one EXPAND fills as many tile rows' A chunks as the A memory holds (with map windows of
        at most ``window`` B entries: as many as such a window serves)."""
        (chunk,) = plan.chunks
        for group in plan.groups:
            if group.first < first_tile:
                continue
            if view is not None:
                blocks = min(plan.mt - group.tm, self.config.depth // chunk.length, 0xFFFF)
                a_addr, items = self._expanded(plan, view, group.tm, chunk, blocks, window)
                yield from items
            else:
                a_addr, item = self._operand(self.a_mem, "A", ("A", self._gemm_id, group.tm, 0), group.tm, chunk,
                                             digest)
                yield item
            b_addr, item = self._operand(self.b_mem, "B", b_scope + ("tiles", group.tn0, group.count), group.tn0,
                                         chunk, digest, group.count)
            yield item
            yield RunTiles(a_addr, b_addr, chunk.length, chunk.length, group)
