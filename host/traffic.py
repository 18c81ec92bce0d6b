"""What GEMMs send to a device, counted without data: the driver's command schedule replayed and summed.

:class:`DriverReplay` runs :class:`fxtrain.sim.planner.CommandPlanner` (the schedule ``Device.gemm`` sends,
with the same residency decisions) and counts its items in a :class:`Traffic`; frame sizes come from
:mod:`fxtrain.sim.wire` and payload sizes from :mod:`fxtrain.sim.payloads`, so a byte counted here is a byte the
driver sends (``tests/test_timemodel.py`` checks the replay against the driver's byte counters).

Fast path (the default): the tile walk is ``tm`` outer, and every tile row does the same thing except for the
names of its A chunks, so once the residency state at a row boundary repeats one seen at an earlier boundary,
the rows in between repeat for as long as the GEMM lasts. :class:`DriverReplay` runs the planner's own schedule,
compares a signature of both operand memories at every row boundary, and when one repeats (period ``p`` rows) it
adds the period's counts ``q`` times and lets the planner jump ``q * p`` rows ahead, replaying the last rows (and
every later GEMM) for real. The counts are exactly the full replay's (``tests/test_timemodel.py`` compares both
on K-splits, B that does not fit and keyed B; ``bench/replay_speed.py`` measures the speed-up). Signature: every
resident range's ``(start, length)`` in LRU order with its key, except that an A chunk of an earlier tile row of
the current GEMM (which the schedule never looks up again) is anonymous; every other key keeps its identity, so
a key the rest of the GEMM may look up is only ever matched with itself.

Partial-sum memory: a K-split on an engine with ``psum_slots >= 1`` goes chunk-outer (groups of tiles, not tile
rows), which the row-period search does not model: those GEMMs are replayed in full (every item of the planner's
schedule; exact by construction).

Members
-------
Traffic
    Commands, operand entries and runs one or more GEMMs send to a device.
DriverReplay
    ``Device.gemm``'s command sequence and residency decisions without data.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from ..sim.conv import EXPAND_ARGS, ConvView, expand_cycles
from ..sim.engine import run_cycles
from ..sim.gemm import EngineConfig
from ..sim.payloads import (DEFAULT_RX_BUFFER, ROUNDING_ARGS, RUN_ARGS, RUN_TILES_ARGS, WRITE_HEADER, entry_bytes,
                            result_bytes, run_tiles_cycles, write_frames)
from ..sim.gemm_plan import plan_gemm
from ..sim.planner import CommandPlanner
from ..sim.schedule_items import Expand, ReadResult, Reused, Run, RunTiles, SetRounding, WriteMap, WriteOperand
from ..sim.wire import Command, request_frame_bytes, response_frame_bytes

__all__ = ["Traffic", "DriverReplay", "shape_keys"]


@dataclass
class Traffic:
    """What some GEMMs send to a device, independent of the word length.

    Members
    -------
    set_rounding : int
        SET_ROUNDING exchanges.
    writes : collections.Counter
        ``(Command.WRITE_A or WRITE_B, entries) -> number of blocks of that many entries sent``.
    reused : collections.Counter
        ``"A"``/``"B"`` -> entries found resident (not sent).
    runs : collections.Counter
        ``(k, drain) -> number of RUN exchanges``.
    read_results : int
        READ_RESULT exchanges (one per output tile of a K-split GEMM).
    run_tiles : collections.Counter
        ``(k, n_tiles) -> number of RUN_TILES exchanges`` (each answers ``n_tiles`` tiles).
    tiles : int
    macs : int
    gemms : int
        GEMM calls (a pipelined driver waits for the device once per call).
    map_writes : collections.Counter
        Convolution mode: ``entries -> number of feature maps of that many B entries written`` (WRITE_B frames).
    expands : collections.Counter
        Convolution mode: ``(count, blocks) -> number of EXPAND exchanges``.
    psum_runs : collections.Counter
        Partial-sum memory: ``(k, drain, load, save) -> number of RUN exchanges`` with LOAD or SAVE (the chunk-outer
        schedule's runs; its CLEAR+DRAIN-only runs, if any, count in ``runs``).
    """

    set_rounding: int = 0
    writes: Counter = field(default_factory=Counter)
    reused: Counter = field(default_factory=Counter)
    runs: Counter = field(default_factory=Counter)
    read_results: int = 0
    tiles: int = 0
    macs: int = 0
    gemms: int = 0
    run_tiles: Counter = field(default_factory=Counter)
    map_writes: Counter = field(default_factory=Counter)
    expands: Counter = field(default_factory=Counter)
    psum_runs: Counter = field(default_factory=Counter)

    def __iadd__(self, other):
        self.set_rounding += other.set_rounding
        self.writes += other.writes
        self.reused += other.reused
        self.runs += other.runs
        self.read_results += other.read_results
        self.tiles += other.tiles
        self.macs += other.macs
        self.gemms += other.gemms
        self.run_tiles += other.run_tiles
        self.map_writes += other.map_writes
        self.expands += other.expands
        self.psum_runs += other.psum_runs
        return self

    def minus(self, other):
        """The counts of this traffic that ``other`` (an earlier snapshot of it) does not have."""
        return Traffic(self.set_rounding - other.set_rounding, self.writes - other.writes,
                       self.reused - other.reused, self.runs - other.runs, self.read_results - other.read_results,
                       self.tiles - other.tiles, self.macs - other.macs, self.gemms - other.gemms,
                       self.run_tiles - other.run_tiles, self.map_writes - other.map_writes,
                       self.expands - other.expands, self.psum_runs - other.psum_runs)

    def copy(self):
        return self.scaled(1)

    def scaled(self, factor):
        """This traffic repeated ``factor`` times."""
        out = Traffic(self.set_rounding * factor, Counter({k: v * factor for k, v in self.writes.items()}),
                      Counter({k: v * factor for k, v in self.reused.items()}),
                      Counter({k: v * factor for k, v in self.runs.items()}), self.read_results * factor,
                      self.tiles * factor, self.macs * factor, self.gemms * factor,
                      Counter({k: v * factor for k, v in self.run_tiles.items()}),
                      Counter({k: v * factor for k, v in self.map_writes.items()}),
                      Counter({k: v * factor for k, v in self.expands.items()}),
                      Counter({k: v * factor for k, v in self.psum_runs.items()}))
        return out

    def write_frames(self, config, rx_buffer=DEFAULT_RX_BUFFER):
        """``[(command, payload_bytes, count)]`` of the WRITE frames (blocks cut by ``sim.payloads.write_frames``
        to fit a device's ``rx_buffer``, as the driver cuts them; feature maps are WRITE_B frames)."""
        frames = Counter()
        writes = self.writes + Counter({(Command.WRITE_B, e): c for e, c in self.map_writes.items()})
        for (cmd, entries), count in writes.items():
            which = "A" if cmd == Command.WRITE_A else "B"
            eb = entry_bytes(config, which)
            for _, part in write_frames(config, which, entries, rx_buffer):
                frames[(cmd, WRITE_HEADER.size + part * eb)] += count
        return [(cmd, payload, count) for (cmd, payload), count in sorted(frames.items())]

    def exchanges(self, config, rx_buffer=DEFAULT_RX_BUFFER):
        """Number of request/response exchanges (frames each way)."""
        return (self.set_rounding + sum(c for _, _, c in self.write_frames(config, rx_buffer))
                + self.n_runs + self.read_results + sum(self.run_tiles.values())
                + sum(self.expands.values()))

    def bytes(self, config, rx_buffer=DEFAULT_RX_BUFFER):
        """``(bytes to the device, bytes from the device)`` on the wire for an engine of ``config``."""
        down = self.set_rounding * request_frame_bytes(ROUNDING_ARGS.size)
        down += self.n_runs * request_frame_bytes(RUN_ARGS.size)
        down += self.read_results * request_frame_bytes(0)
        writes = 0
        for _, payload, count in self.write_frames(config, rx_buffer):
            down += count * request_frame_bytes(payload)
            writes += count
        down += sum(self.expands.values()) * request_frame_bytes(EXPAND_ARGS.size)
        acks = self.set_rounding + writes + self.n_runs + sum(self.expands.values())
        up = acks * response_frame_bytes(0)
        up += self.read_results * response_frame_bytes(result_bytes(config))
        for (_, n), count in self.run_tiles.items():
            down += count * request_frame_bytes(RUN_TILES_ARGS.size)
            up += count * response_frame_bytes(n * result_bytes(config))
        return down, up

    @property
    def n_runs(self):
        """RUN exchanges (with and without LOAD/SAVE)."""
        return sum(self.runs.values()) + sum(self.psum_runs.values())

    def engine_cycles(self, config):
        """Cycles the engine is busy (``sim.engine.run_cycles`` summed over the runs, with their LOAD/SAVE terms,
        ``run_tiles_cycles`` over the RUN_TILES)."""
        return (sum(count * run_cycles(config, k, drain) for (k, drain), count in self.runs.items())
                + sum(count * run_cycles(config, k, drain, load=load, save=save)
                      for (k, drain, load, save), count in self.psum_runs.items())
                + sum(count * run_tiles_cycles(config, k, n) for (k, n), count in self.run_tiles.items()))

    def expand_cycles(self, config):
        """Executor cycles of the EXPANDs (``sim.conv.expand_cycles`` summed): the executor generates A entries
        while the engine is idle, so they add to the device's work, not to the engine's busy cycles."""
        return sum(count * expand_cycles(config, n, blocks) for (n, blocks), count in self.expands.items())


def _count(traffic, item):
    """Add one schedule item of :class:`fxtrain.sim.planner.CommandPlanner` to ``traffic``."""
    if isinstance(item, WriteOperand):
        cmd = Command.WRITE_A if item.which == "A" else Command.WRITE_B
        traffic.writes[(cmd, item.entries)] += 1
    elif isinstance(item, Reused):
        traffic.reused[item.which] += item.entries
    elif isinstance(item, Run) and (item.load or item.save):
        traffic.psum_runs[(item.k, item.drain, item.load, item.save)] += 1
    elif isinstance(item, Run):
        traffic.runs[(item.k, item.drain)] += 1
    elif isinstance(item, ReadResult):
        traffic.read_results += 1
    elif isinstance(item, RunTiles):
        traffic.run_tiles[(item.k, item.n_tiles)] += 1
    elif isinstance(item, SetRounding):
        traffic.set_rounding += 1
    elif isinstance(item, WriteMap):
        traffic.map_writes[item.entries] += 1
    elif isinstance(item, Expand):
        traffic.expands[(item.count, item.blocks)] += 1
    else:
        raise TypeError(f"Unknown schedule item {item!r}: the replay does not count it")


@lru_cache(maxsize=256)
def _plan(config, m, k, n, tile_loop):
    """``plan_gemm``, cached: a ResNet-20 step plans the same shapes many times, and a plan lists every tile.
    The schedule only reads a plan."""
    return plan_gemm(config, m, k, n, tile_loop=tile_loop)


class _RowWalk:
    """Stand-in for :attr:`GemmPlan.tiles` or :attr:`GemmPlan.groups`: the same items in the same order (tile row
    ``tm`` outer, ``per_row`` items per row), read lazily from the plan's own sequence, so that the replay can make
    the schedule skip whole tile rows it has not reached yet (:meth:`jump`)."""

    def __init__(self, items, mt):
        if len(items) % mt:
            raise _Unsupported(f"{len(items)} schedule items do not split into {mt} tile rows")
        self.items, self.mt, self.per_row = items, mt, len(items) // mt
        self._jump_to = None
        self.skipped_rows = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        if not (isinstance(index, slice) and index.start in (None, 0) and index.stop is None
                and index.step is None):
            raise _Unsupported(f"the planner read its tiles as [{index!r}]")
        return self._walk()

    def __iter__(self):
        return self._walk()

    def jump(self, row):
        """Continue at tile row ``row`` after the current row."""
        self._jump_to = row

    def _walk(self):
        tm = 0
        while tm < self.mt:
            yield from self.items[tm * self.per_row:(tm + 1) * self.per_row]
            tm += 1
            if self._jump_to is not None:
                self.skipped_rows += self._jump_to - tm
                tm, self._jump_to = self._jump_to, None


class _Unsupported(Exception):
    """The planner does something the fast path does not know: replay in full."""


class DriverReplay:
    """``fxtrain.host.device.Device.gemm`` without data: the same planner, so the same tiling, K chunks and
    residency decisions (contents are assumed to be what the keys say: a ``b_key`` names B's contents).

    Parameters
    ----------
    config : EngineConfig
        Only ``rows``, ``cols``, ``depth`` and ``b_depth`` matter (the traffic in entries does not depend on
        ``wl``).
    tile_loop : bool
        RUN_TILES when K fits one chunk (the driver of protocol version 2, default); ``False`` replays the
        per-tile RUN / READ_RESULT schedule of version 1 (the "before" of ``bench/link_bytes.py``).
    fast : bool
        Skip the periodic part of the tile walk (module docstring; default). ``False`` replays every tile.

    Members
    -------
    replayed_rows, skipped_rows : int
        Tile rows the fast path replayed and skipped so far (all rows are replayed when ``fast`` is off).
    """

    def __init__(self, config, tile_loop=True, fast=True):
        if not isinstance(config, EngineConfig):
            raise TypeError(f"config must be an EngineConfig, not {config!r}")
        self.config = config
        self.tile_loop = bool(tile_loop)
        self.fast = bool(fast)
        self.planner = CommandPlanner(config)
        self.replayed_rows = 0
        self.skipped_rows = 0

    def gemm(self, m, k, n, rounding=None, b_key=None, a_view=None):
        """The :class:`Traffic` of one ``M x K x N`` GEMM issued now (advances the residency state). ``a_view``:
        a :class:`fxtrain.sim.conv.ConvView` (its ``x_raw`` unused, its ``key`` naming the map's contents) for
        convolution mode, used as the driver uses it (``config.expander`` and the map fits)."""
        plan = _plan(self.config, m, k, n, self.tile_loop)
        # map windows (sim.planner.conv_window_room) change from row to row in a way the residency signature does
        # not show: such a GEMM is replayed row by row
        windowed = self.planner.conv_source(plan, a_view)[1] > 0
        if self.fast and plan.mt > 2 and not self.planner.uses_psum(plan) and not windowed:
            snapshot = copy.deepcopy(self.planner)
            try:
                return self._gemm_skipping(plan, rounding, b_key, a_view)
            except _Unsupported:
                self.planner = snapshot
        traffic = Traffic(macs=m * k * n, tiles=len(plan.tiles), gemms=1)
        for item in self.planner.schedule(plan, rounding, b_key=b_key, a_view=a_view):
            _count(traffic, item)
        self.replayed_rows += plan.mt
        return traffic

    def _signature(self, gemm_id, row):
        """The residency state at the start of tile row ``row``, A chunks of earlier rows anonymous, those of later
        rows (one EXPAND fills several) named relative to ``row``."""
        def label(key):
            if (isinstance(key, tuple) and len(key) == 4 and key[0] == "A" and key[1] == gemm_id
                    and isinstance(key[2], int)):
                return ("ahead", key[2] - row, key[3]) if key[2] >= row else None
            return key
        sig = []
        for mem in (self.planner.a_mem, self.planner.b_mem):
            ranges = getattr(mem, "_ranges", None)
            if ranges is None:
                raise _Unsupported("the planner's memories have no _ranges")
            sig.append(tuple((label(key), start, length) for key, (start, length, _) in ranges.items()))
        return tuple(sig)

    def _shift_ahead(self, gemm_id, row, skip):
        """Rename the A chunks resident for tile rows ``>= row`` (one EXPAND filled them ahead) to the rows
        ``skip`` later, where the schedule continues: the state the signature says repeats there."""
        ranges = self.planner.a_mem._ranges
        for key in list(ranges):
            value = ranges.pop(key)
            if (isinstance(key, tuple) and len(key) == 4 and key[0] == "A" and key[1] == gemm_id
                    and isinstance(key[2], int) and key[2] >= row):
                key = (key[0], key[1], key[2] + skip, key[3])
            ranges[key] = value

    def _row_end(self, item, plan):
        """The tile row that ``item`` ends (its last output tile is the row's last), else None."""
        if isinstance(item, ReadResult) and plan.groups is None:
            return item.tm if item.tn == plan.nt - 1 else None
        if isinstance(item, RunTiles) and plan.groups is not None:
            group = item.group
            return group.tm if group.tn0 + group.count == plan.nt else None
        return None

    def _gemm_skipping(self, plan, rounding, b_key, a_view=None):
        lazy = copy.copy(plan)
        if plan.groups is None:
            walk = lazy.tiles = _RowWalk(plan.tiles, plan.mt)
        else:
            walk = lazy.groups = _RowWalk(plan.groups, plan.mt)
            if any(g.tm != i // walk.per_row for i, g in enumerate(plan.groups)):
                raise _Unsupported("the RUN_TILES groups are not row by row")
        traffic = Traffic(macs=plan.m * plan.k * plan.n, gemms=1)
        seen = {}              # signature at a row boundary -> (row, traffic before that row)
        searching, skip = True, 0
        for item in self.planner.schedule(lazy, rounding, b_key=b_key, a_view=a_view):
            _count(traffic, item)
            if not searching or (ended := self._row_end(item, plan)) is None:
                continue
            row = ended + 1                         # the row the schedule starts next
            if row >= plan.mt:
                continue
            signature = self._signature(self.planner._gemm_id, row)
            if signature not in seen:
                seen[signature] = (row, traffic.copy())
                continue
            first, before = seen[signature]
            period = row - first
            # an EXPAND of b tile rows near the end fills fewer (the rows left): those rows are replayed for real
            ahead = max((blocks for _, blocks in traffic.expands), default=0)
            repeats = max(0, (plan.mt - row - ahead) // period)
            if repeats:
                skip = repeats * period
                traffic += traffic.minus(before).scaled(repeats)
                walk.jump(row + skip)
                self._shift_ahead(self.planner._gemm_id, row, skip)
            searching = False
        tiles = traffic.read_results + sum(n * c for (_, n), c in traffic.run_tiles.items())
        if walk.skipped_rows != skip or tiles != len(plan.tiles):
            raise _Unsupported("the schedule did not walk the tiles row by row")
        traffic.tiles = len(plan.tiles)
        self.replayed_rows += plan.mt - walk.skipped_rows
        self.skipped_rows += walk.skipped_rows
        return traffic

    def step(self, gemms, step_id=0):
        """The :class:`Traffic` of a list of :class:`GemmShape`; weights keyed by ``(layer, kind, step_id)``, a
        convolution's feature map (``GemmShape.conv``) by ``(layer, "x" or "dy", step_id)`` (its forward and
        weight-gradient GEMMs share ``X``, as the layers' views do; the input-gradient convolution reads ``dY``)."""
        total = Traffic()
        for g in gemms:
            total += self.gemm(g.m, g.k, g.n, g.rounding, *shape_keys(g, step_id))
        return total


def shape_keys(g, step_id, conv=True):
    """``(b_key, a_view)`` a :class:`GemmShape` is replayed with at step ``step_id`` (:meth:`DriverReplay.step`);
    ``conv=False`` leaves the view out (the plain schedule, whatever the engine)."""
    key = (g.layer, g.kind, step_id) if g.b_weights else None
    view = None
    if g.conv is not None and conv:
        name = "dy" if g.kind == "input_grad" else "x"  # the input-gradient convolution's map is dY
        view = ConvView(None, g.conv, g.kind == "weight_grad", (g.layer, name, step_id), b"")
    return key, view
