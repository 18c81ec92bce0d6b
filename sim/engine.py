"""Command-level golden model of the GEMM engine (``rtl/engine.py``), its cycle counts and its counters.

The model executes the commands a host sends to the engine (operand writes, seed writes, runs, result reads)
and produces bit for bit what :class:`fxtrain.rtl.engine.GemmEngine` produces, plus the exact number of cycles
each run occupies the engine. The arithmetic is that of ``docs/numerics.md`` §5 (exact wide accumulation) and §3
(:func:`.rounding.round_shift`); the random words come from :func:`.lfsr.lane_words` (§4); the tile/lane order is
§6, so :func:`gemm_via_engine` equals :func:`.gemm.tiled_gemm` bit for bit.

Engine interface (``rtl/engine.py``, ``GemmEngine(config)``; widths: ``AW = log2(depth)``, ``BW = log2(b_depth)``)
---------------------------------------------------------------------------------------------------------------
All streams are ``amaranth.lib.stream`` interfaces (``payload``/``valid``/``ready``); in Verilog the members are
flattened as ``<name>__payload``, ``<name>__valid``, ``<name>__ready`` and each payload is one packed vector laid
out by the layouts below (:func:`engine_layouts`; first field in the least significant bits).

``a_write`` : In stream, payload ``{addr: unsigned(AW), data: ArrayLayout(signed(wl), rows)}``
    Writes A-memory entry ``addr`` (entry ``k`` is column ``k`` of an A tile: ``data[r] = A[r, k]``).
    Always ready (a dedicated write port).
``b_write`` : In stream, payload ``{addr: unsigned(BW), data: ArrayLayout(signed(wl), cols)}``
    Writes B-memory entry ``addr`` (entry ``k`` is row ``k`` of a B tile: ``data[j] = B[k, j]``). The B memory
    has ``b_depth`` entries (``EngineConfig.b_depth``, at least ``depth``). Ready except in the cycles in which
    a run reads the B memory (the cycle a run command is accepted, a LOAD run's ``LOAD`` cycles and the ``COMPUTE``
    cycles after them): the B
    memory may be single-ported (iCE40 SPRAM, ``rtl/operand_memory.py``), so a write waits for the read. The
    host link's executor never writes during a run (it answers RUN only when the engine is idle again), so it
    never waits.
``run`` : In stream, payload ``{a_base: unsigned(AW), b_base: unsigned(BW), k: unsigned(AW + 1), clear: 1,
drain: 1}`` and, only when ``config.psum_slots > 0``, ``{load: 1, save: 1, slot: unsigned(16)}`` after them
    One run: for ``i = 0 .. k-1`` every PE ``(r, j)`` accumulates ``A_mem[a_base + i][r] * B_mem[b_base + i][j]``.
    ``clear=1`` zeroes the accumulators before the first product; ``drain=1`` rounds the ``rows x cols``
    accumulators after the last product (column ``j`` through rounder/lane ``j``, rows in increasing order),
    writes them to a result bank and leaves every accumulator at 0. Accepted only while the engine is idle
    (``ready = ~busy``). A run with ``k == 0``, ``k > depth``, ``a_base + k > depth`` or ``b_base + k > b_depth``
    is *rejected*: accepted and dropped in one cycle, nothing computed, no lane advanced; it sets ``error``
    and counts in ``counters.rejected``.
``result`` : Out stream, payload ``{data: ArrayLayout(signed(wl), cols), sat: unsigned(cols), last: 1}``
    ``rows`` transfers per drained tile, row ``r = 0 .. rows-1`` in order; ``sat`` bit ``j`` is the saturation
    flag of ``data[j]``; ``last`` marks row ``rows - 1``. Two result banks: a drained tile waits in one while
    the next run computes; a drain that finds both banks unread waits (``counters.stall_out``).
``shift`` : In ``range(33)``; ``mode`` : In(1) (:class:`.rounding.RoundingMode`)
    Rounding parameters, sampled when a run command is accepted (they apply to that run's drain). The 6-bit
    ``shift`` port can carry 33..63: the RTL treats those as 32 (the model's ``run`` rejects them with
    ``ValueError``; hosts never send them).
``seed_lane`` : In ``range(cols)``; ``seed`` : In(32); ``seed_load`` : In(1)
    While ``seed_load`` is high, lane ``seed_lane`` is loaded with ``seed`` (a zero seed is ignored, §4.3).
    Load seeds only while the engine is idle.
``busy`` : Out(1)
    A run is in progress (not ready for a run command).
``error`` : Out(1)
    Sticky: a run was rejected since the last ``counters_clear``.
``counters`` : Out ``StructLayout`` of 32-bit fields ``busy, stall_in, stall_out, saturated, runs, rejected``
    (saturating at ``2**32 - 1``; all zeroed by ``counters_clear``, which also clears ``error``). Every clock
    cycle counts in exactly one of ``busy`` (a run command is accepted, or the engine works on a run),
    ``stall_in`` (idle with no run command offered: the engine waits for input) and ``stall_out`` (a drain
    waits because both result banks hold tiles that the ``result`` stream has not taken: it waits for output).
    ``saturated`` counts saturated outputs written to the result banks, ``runs`` accepted runs (rejected ones
    included) and ``rejected`` rejected runs. There is no operand-write contention to count: the writes have
    their own memory ports (a B write waits only while a run reads B, see ``b_write``), so an input stall is
    only ever a missing run command.
``counters_clear`` : In(1)
    Zeroes the counters and ``error``.
``b_read_en`` : In(1); ``b_read_addr`` : In(BW); ``b_read_data`` : Out ``ArrayLayout(signed(wl), cols)``
    Only when ``config.expander`` (EXPAND, ``rtl/expander.py``): while the engine is idle, no run is offered and
    ``b_read_en`` is high, the B memory's read port reads entry ``b_read_addr``; ``b_read_data`` shows it in
    the next cycle. ``b_write`` is not ready while ``b_read_en`` is high (one port in SPRAM).

Timing (cycle ``t0`` = the cycle in which the run command is transferred)
-------------------------------------------------------------------------
A run occupies the engine for exactly :func:`run_cycles` cycles ``t0 .. t0 + run_cycles - 1``, provided its
drain (if any) finds a free result bank; the engine accepts the next run in cycle ``t0 + run_cycles``. Hence
back-to-back runs follow each other every ``run_cycles`` cycles and ``counters.busy`` grows by ``run_cycles``
per run::

    run_cycles(k, drain=0) = k                                  (K chunks stream with no bubble)
    run_cycles(k, drain=1) = k + OPERAND_LATENCY + rows + cols + rows + ROUNDER_LATENCY
                           = k + 2*rows + cols + 3
    rejected run           = 1

``OPERAND_LATENCY`` (1) is the register stage between the operand memories' read ports and the array (every
multiplier input is a flip-flop output), ``rows + cols`` the systolic fill/flush (the last product reaches PE
``(rows-1, cols-1)`` and is added), ``rows`` the drain through the column shift chains and ``ROUNDER_LATENCY``
the rounder pipeline. (The array's registered copies of the drain-shift control add no cycle: the controller
raises it ``shift_latency`` cycles before the accumulators are final and delays the rounders' valid alike.)

Operand memories: a write lands at the end of the cycle it is transferred in. A run reads entry
``base + i`` in cycle ``t0 + i``; writing an A entry of ``[a_base, a_base + k)`` while that run is in progress
gives that run either the old or the new value, so the host must only write A entries outside the range of the
run in progress (e.g. the other half of the memory: double buffering). B writes wait while a run reads B (see
``b_write``), so they land after that run has read its entries. Writes to any entry while idle are safe.

Partial-sum memory (``EngineConfig.psum_slots`` > 0)
--------------------------------------------------
``psum_slots`` slots of ``rows x cols`` exact accumulators (``acc_width`` bits; in the RTL one block RAM of
``psum_slots * rows`` entries of ``cols * acc_width`` bits, slot ``s`` row ``r`` at entry ``s * rows + r``). A run with ``load`` sets the
accumulators to slot ``slot`` before its first product (``load`` excludes ``clear``); a run with ``save`` writes
the accumulators to slot ``slot`` after its last product and leaves them 0 (``save`` excludes ``drain``): no
rounding, no result bank, no lane word. A run breaking these rules, or naming a slot ``>= psum_slots`` with
``load`` or ``save``, is rejected like an out-of-range run. Cycles: :func:`run_cycles` with ``load``/``save``
(:func:`load_cycles` ``= rows + max(0, cols - 2) + 1`` more before the products; a saving run ends :func:`save_cycles`
``= OPERAND_LATENCY + 2*rows + cols - 2`` after its last entry read, where a draining run ends
``OPERAND_LATENCY + 2*rows + cols + ROUNDER_LATENCY`` after it)::

    run_cycles(k, drain, load, save) = k + (rows + max(0, cols - 2) + 1 if load) + (2*rows + cols - 1 if save
                                       else 2*rows + cols + 3 if drain else 0)

LOAD moves the slot in through the drain chains (the bottom row takes slot row ``i`` in the ``i``-th shift, so
row 0, shifted first, ends at the top); SAVE moves the accumulators out through them (``acc_out`` shows rows
``0 .. rows-1``, written raw to the slot) and shifts zeros in.

Members
-------
OPERAND_LATENCY : int
    Registers between the operand memories' read data and the array in ``rtl/engine.py`` (1).
ROUNDER_LATENCY : int
    Pipeline latency of ``rtl.rounder.StochasticRounder`` (the RTL checks it at elaboration).
COUNTER_WIDTH : int
    32.
COUNTER_NAMES : tuple of str
    Names of the counters, in layout order.
engine_layouts
    The stream payload and counter layouts of an engine (``amaranth.lib.data`` layouts).
run_cycles
    Cycles of one run (closed form above).
gemm_cycles
    Cycles of :func:`gemm_via_engine` with back-to-back runs (no host or output stalls).
run_is_valid
    Whether a run command is accepted or rejected.
EngineModel
    The command-level model.
gemm_via_engine
    The canonical host tiling of a whole GEMM onto an engine model; equals :func:`.gemm.tiled_gemm`.
play_item
    One planner schedule item executed on an engine model (what :func:`gemm_via_engine` plays).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .gemm import EngineConfig, GemmResult, check_gemm
from .lfsr import check_lfsr, lane_advance, lane_words
from .pe import check_operands
from .gemm_plan import plan_gemm
from .planner import CommandPlanner
from .schedule_items import Expand, ReadResult, Run, RunTiles, WriteMap, WriteOperand
from .rounding import RoundingMode, check_shift, parse_mode, round_shift

__all__ = ["OPERAND_LATENCY", "ROUNDER_LATENCY", "COUNTER_WIDTH", "COUNTER_NAMES", "RESET_LANE_STATE", "addr_bits",
           "b_addr_bits", "engine_layouts",
           "run_cycles", "load_cycles", "save_cycles", "gemm_cycles", "run_is_valid", "EngineModel", "gemm_via_engine",
           "play_item"]

OPERAND_LATENCY = 1
ROUNDER_LATENCY = 2


def load_cycles(config):
    """Cycles a LOAD adds before a run's first product (``rows + max(0, cols - 2) + 1``): the RTL accepts the
    run (its operand read of that cycle is unused), then spends ``max(0, cols - 2)`` cycles waiting for the
    products of a run accepted just before to be added (the systolic flush: a shift must not act before them)
    and ``rows`` cycles asking the drain chains for one shift each (slot row ``i`` read in the ``i``-th,
    entering the bottom row 2 cycles later); the first operand entry is read in the cycle after, so its product
    meets accumulators that hold the slot (the last shift acts 2 cycles before the first addition)."""
    return config.rows + max(0, config.cols - 2) + 1


def save_cycles(config):
    """Cycles from a saving run's last entry read to its end (``OPERAND_LATENCY + 2*rows + cols - 2``): the
    ``FLUSH`` of a drain (``rows + cols + OPERAND_LATENCY - 2``, the array's shift latency 2 subtracted) and
    ``rows`` shift requests; no rounder, no result bank, no tail: the last two slot writes land in the first
    two idle cycles (a following LOAD reads them later)."""
    return OPERAND_LATENCY + 2 * config.rows + config.cols - 2


COUNTER_WIDTH = 32
COUNTER_NAMES = ("busy", "stall_in", "stall_out", "saturated", "runs", "rejected")
#: State of every lane after reset (the ``reset_seed`` of ``rtl.lfsr.LFSRLanes``); hosts load seeds anyway.
RESET_LANE_STATE = 1


def _check_config(config):
    if not isinstance(config, EngineConfig):
        raise TypeError(f"Engine configuration must be an EngineConfig, not {config!r}")
    return config


def addr_bits(config):
    """Bits of an A-memory address and of ``k - 1`` (``log2(depth)``)."""
    return _check_config(config).depth.bit_length() - 1


def b_addr_bits(config):
    """Bits of a B-memory address (``log2(b_depth)``)."""
    return _check_config(config).b_depth.bit_length() - 1


def engine_layouts(config):
    """``dict`` of the ``amaranth.lib.data`` layouts of ``a_write``, ``b_write``, ``run``, ``result``, ``counters``."""
    from amaranth.hdl import signed, unsigned
    from amaranth.lib import data

    aw, bw = addr_bits(config), b_addr_bits(config)
    return {
        "a_write": data.StructLayout({"addr": unsigned(aw), "data": data.ArrayLayout(signed(config.wl), config.rows)}),
        "b_write": data.StructLayout({"addr": unsigned(bw), "data": data.ArrayLayout(signed(config.wl), config.cols)}),
        "run": data.StructLayout({"a_base": unsigned(aw), "b_base": unsigned(bw), "k": unsigned(aw + 1),
                                  "clear": unsigned(1), "drain": unsigned(1),
                                  **({"load": unsigned(1), "save": unsigned(1), "slot": unsigned(16)}
                                     if config.psum_slots else {})}),
        "result": data.StructLayout({"data": data.ArrayLayout(signed(config.wl), config.cols),
                                     "sat": unsigned(config.cols), "last": unsigned(1)}),
        "counters": data.StructLayout({name: unsigned(COUNTER_WIDTH) for name in COUNTER_NAMES}),
    }


def run_is_valid(config, a_base, b_base, k, flags=0, slot=0):
    """``True`` if the engine executes run ``(a_base, b_base, k)`` with RUN ``flags`` and ``slot``, ``False`` if
    it rejects it (see module doc; :func:`.payloads.run_flags_ok`)."""
    from .payloads import run_flags_ok
    config = _check_config(config)
    return (1 <= k <= config.depth and a_base + k <= config.depth and b_base + k <= config.b_depth
            and run_flags_ok(config, flags, slot))


def run_cycles(config, k, drain, load=False, save=False):
    """Cycles one accepted, valid run occupies the engine (module docstring, *Timing* and *Partial-sum
    memory*)."""
    config = _check_config(config)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= config.depth:
        raise ValueError(f"Run length k must be an integer from 1 to the depth {config.depth}, not {k!r}")
    if drain not in (0, 1, False, True):
        raise ValueError(f"drain must be 0 or 1, not {drain!r}")
    k = int(k) + (load_cycles(config) if load else 0)
    if save:
        return k + save_cycles(config)
    if not drain:
        return k
    return k + OPERAND_LATENCY + 2 * config.rows + config.cols + ROUNDER_LATENCY


def gemm_cycles(config, m, k, n, chunk=None):
    """Engine cycles of :func:`gemm_via_engine` for an ``M x K x N`` GEMM, runs back to back."""
    config = _check_config(config)
    plan = plan_gemm(config, m, k, n, _check_chunk(config, chunk))
    psum = CommandPlanner(config).uses_psum(plan)            # chunk-outer: middle runs LOAD and/or SAVE
    per_tile = sum(run_cycles(config, c.length, c.k1 == k, load=psum and c.k0 > 0, save=psum and c.k1 < k)
                   for c in plan.chunks)
    return len(plan.tiles) * per_tile


def _check_chunk(config, chunk):
    if chunk is None:
        return config.depth
    if not isinstance(chunk, int) or not 1 <= chunk <= config.depth:
        raise ValueError(f"K chunk must be an integer from 1 to the depth {config.depth}, not {chunk!r}")
    return chunk


class EngineModel:
    """What a :class:`fxtrain.rtl.engine.GemmEngine` of ``config`` computes, command by command.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    config : EngineConfig
    a_mem : numpy.ndarray
        ``depth x rows`` int64, the A memory (zero after reset).
    b_mem : numpy.ndarray
        ``b_depth x cols`` int64, the B memory.
    acc : numpy.ndarray
        ``rows x cols`` int64, the accumulators (two's complement in ``acc_width`` bits, like the RTL).
    psum : numpy.ndarray
        ``psum_slots x rows x cols`` int64, the partial-sum memory.
    lane_state : list of int
        Current state of each lane.
    results : collections.deque
        Drained tiles not read yet, oldest first, each ``(out, sat)``. The RTL holds two and makes a third
        drain wait (``stall_out``) until the host reads; the model queues without limit.
    counters : dict
        ``busy``, ``saturated``, ``runs``, ``rejected`` as the RTL counts them; ``stall_in`` and ``stall_out``
        depend on the host's timing and stay 0 here (an ideal host).
    error : bool
        Sticky rejected-run flag.
    write_a, write_b, set_seed, set_seeds, run, read_result, clear_counters
        The commands.
    """

    def __init__(self, config):
        self.config = _check_config(config)
        self.a_mem = np.zeros((config.depth, config.rows), dtype=np.int64)
        self.b_mem = np.zeros((config.b_depth, config.cols), dtype=np.int64)
        self.acc = np.zeros((config.rows, config.cols), dtype=np.int64)
        self.psum = np.zeros((config.psum_slots, config.rows, config.cols), dtype=np.int64)
        self.lane_state = [RESET_LANE_STATE] * config.lanes
        self.results = deque()
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.error = False

    def _write(self, mem, name, width, addr, entries):
        depth = len(mem)
        entries = check_operands(name, np.asarray(entries), self.config.wl)
        if entries.ndim == 1:
            entries = entries[None, :]
        if entries.ndim != 2 or entries.shape[1] != width:
            raise ValueError(f"{name} entries must be vectors of {width} raw words, not shape {entries.shape}")
        if not isinstance(addr, (int, np.integer)) or not 0 <= addr <= depth - len(entries):
            raise ValueError(f"{name} write of {len(entries)} entries at address {addr!r} does not fit in depth "
                             f"{depth}")
        mem[addr:addr + len(entries)] = entries

    def write_a(self, addr, entries):
        """Write A entries (each ``rows`` raw words: a column of an A tile) from address ``addr`` on."""
        self._write(self.a_mem, "A", self.config.rows, addr, entries)

    def write_b(self, addr, entries):
        """Write B entries (each ``cols`` raw words: a row of a B tile) from address ``addr`` on."""
        self._write(self.b_mem, "B", self.config.cols, addr, entries)

    def set_seed(self, lane, seed):
        """Load lane ``lane`` with ``seed`` (non-zero; the RTL ignores a zero seed, the model raises)."""
        if not isinstance(lane, (int, np.integer)) or not 0 <= lane < self.config.lanes:
            raise ValueError(f"Lane must be an integer from 0 to {self.config.lanes - 1}, not {lane!r}")
        check_lfsr(self.config.lane_width, seed)
        self.lane_state[int(lane)] = int(seed)

    def set_seeds(self, seeds):
        """Load every lane: ``seeds[j]`` into lane ``j``."""
        seeds = list(seeds)
        if len(seeds) != self.config.lanes:
            raise ValueError(f"Engine has {self.config.lanes} lanes, but {len(seeds)} seeds were given")
        for lane, seed in enumerate(seeds):
            self.set_seed(lane, seed)

    def _count(self, name, amount):
        self.counters[name] = min(self.counters[name] + int(amount), (1 << COUNTER_WIDTH) - 1)

    def clear_counters(self):
        """``counters_clear``: zero the counters and the error flag."""
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.error = False

    def run(self, a_base, b_base, k, clear, drain, shift=0, mode=RoundingMode.NEAREST, *, load=False,
            save=False, slot=0):
        """Execute one run command; returns the cycles it occupies the engine (1 for a rejected run). ``load`` /
        ``save``: the partial-sum slot ``slot`` (module docstring)."""
        config = self.config
        for name, value, depth in (("a_base", a_base, config.depth), ("b_base", b_base, config.b_depth)):
            if not isinstance(value, (int, np.integer)) or not 0 <= value < depth:
                raise ValueError(f"{name} must be an integer from 0 to {depth - 1}, not {value!r}")
        if not isinstance(k, (int, np.integer)) or not 0 <= k < 2 * config.depth:
            raise ValueError(f"k must be an integer from 0 to {2 * config.depth - 1} (the field width), not {k!r}")
        shift = check_shift(shift)
        mode = parse_mode(mode)
        self._count("runs", 1)
        from .payloads import RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE
        flags = ((RUN_CLEAR if clear else 0) | (RUN_DRAIN if drain else 0) | (RUN_LOAD if load else 0)
                 | (RUN_SAVE if save else 0))
        if not isinstance(slot, (int, np.integer)) or not 0 <= slot <= 0xFFFF:
            raise ValueError(f"slot must be an integer from 0 to 65535, not {slot!r}")
        if not run_is_valid(config, a_base, b_base, k, flags, slot):
            self.error = True
            self._count("rejected", 1)
            self._count("busy", 1)
            return 1
        a = self.a_mem[a_base:a_base + k]          # k x rows
        b = self.b_mem[b_base:b_base + k]          # k x cols
        if load:
            self.acc[:] = self.psum[slot]
        elif clear:
            self.acc[:] = 0
        self.acc = self._wrap(self.acc + a.T @ b)
        if save:
            self.psum[slot] = self.acc
            self.acc[:] = 0
        elif drain:
            self._drain(shift, mode)
        cycles = run_cycles(config, int(k), bool(drain), bool(load), bool(save))
        self._count("busy", cycles)
        return cycles

    def _wrap(self, acc):
        width = self.config.acc_width
        half = np.int64(1 << (width - 1))
        if width >= 64:
            return acc
        return ((acc + half) & np.int64((1 << width) - 1)) - half

    def _drain(self, shift, mode):
        config = self.config
        if mode is RoundingMode.STOCHASTIC:
            rand = np.empty((config.rows, config.cols), dtype=np.uint64)
            for j in range(config.cols):
                rand[:, j], self.lane_state[j] = lane_words(self.lane_state[j], config.rows, config.lane_width)
        else:
            rand = None
            self.lane_state = [lane_advance(s, config.rows, config.lane_width) for s in self.lane_state]
        out, sat = round_shift(self.acc, shift, mode, rand, config.wl)
        self.acc[:] = 0
        self._count("saturated", int(sat.sum()))
        self.results.append((out, sat))

    def read_result(self):
        """The oldest drained tile not read yet: ``(out, sat)``, ``rows x cols`` int64 and bool."""
        if not self.results:
            raise RuntimeError("No drained tile is waiting to be read")
        return self.results.popleft()


def gemm_via_engine(model, a, b, shift, mode, chunk=None, planner=None, a_view=None):
    """``round(A @ B)`` computed by the engine ``model`` playing the planner's command schedule.

    The schedule is :class:`.planner.CommandPlanner`'s (what the host driver sends): pad ``A`` to ``Mp`` rows
    and ``B`` to ``Np`` columns (multiples of ``rows``/``cols``); for each tile ``tm`` (outer), ``tn`` (inner),
    split K into chunks of ``chunk`` (default ``depth``); for each chunk write the A and B entries that are not
    resident and run with ``clear`` on the first chunk and ``drain`` on the last; then read the tile (without a
    K-split: RUN_TILES groups, each tile a clear+drain run then its read).
    ``planner`` (default: a fresh one) carries residency across calls. Uses the model's current lane states
    and leaves them advanced. Equals ``tiled_gemm(config, a, b, shift, mode, lane_state)`` bit for bit
    (``tests/test_engine_model.py``). ``a_view`` (a :class:`.conv.ConvView` of ``a``): convolution mode where
    the planner uses it (the map written to the B memory, A chunks generated as the device's EXPAND does).

    Returns
    -------
    GemmResult
    """
    if not isinstance(model, EngineModel):
        raise TypeError(f"gemm_via_engine needs an EngineModel, not {model!r}")
    config = model.config
    a, b, shift, mode = check_gemm(config, a, b, shift, mode)
    plan = plan_gemm(config, a.shape[0], a.shape[1], b.shape[1], _check_chunk(config, chunk))
    planner = CommandPlanner(config) if planner is None else planner
    ap, bp = plan.pad(a, b)
    c = np.zeros((plan.mp, plan.np_), dtype=np.int64)
    sat = np.zeros((plan.mp, plan.np_), dtype=bool)
    for item in planner.schedule(plan, (shift, mode), a_view=a_view):
        for tile, (out, flags) in play_item(model, plan, ap, bp, item, shift, mode):
            rs, cs = plan.tile_slices(*tile)
            c[rs, cs], sat[rs, cs] = out, flags
    return GemmResult(c[:plan.m, :plan.n], sat[:plan.m, :plan.n], list(model.lane_state))


def play_item(model, plan, ap, bp, item, shift, mode):
    """Execute one :class:`.planner.CommandPlanner` schedule item of ``plan`` on ``model`` as the device does
    (``ap``, ``bp``: the padded operands, :meth:`.gemm_plan.GemmPlan.pad`). Returns the tiles it reads, a list of
    ``((tm, tn), (out, sat))`` (one for READ_RESULT, the group's for RUN_TILES, none otherwise)."""
    config = model.config
    if isinstance(item, WriteMap):
        from .conv import fmap_pack
        model.write_b(item.addr, fmap_pack(config, item.view.x_raw))
    elif isinstance(item, Expand):              # as the device's EXPAND (sim.protocol)
        from .conv import expand_entries
        model.write_a(item.a_base, expand_entries(config, model.b_mem, item.args(config)))
    elif isinstance(item, WriteOperand):
        if item.which == "A":
            model.write_a(item.addr, plan.a_block(ap, item.index, item.chunk))
        else:
            model.write_b(item.addr, plan.b_block(bp, item.index, item.chunk, item.count))
    elif isinstance(item, Run):
        psum = {"load": item.load, "save": item.save, "slot": item.slot} if item.load or item.save else {}
        model.run(item.a_base, item.b_base, item.k, clear=item.clear, drain=item.drain, shift=shift, mode=mode,
                  **psum)
    elif isinstance(item, ReadResult):
        return [((item.tm, item.tn), model.read_result())]
    elif isinstance(item, RunTiles):            # as the device's RUN_TILES (sim.protocol)
        reads = []
        for t, tile in enumerate(item.group.tiles):
            model.run(item.a_base, item.b_base + t * item.b_step, item.k, clear=True, drain=True, shift=shift,
                      mode=mode)
            reads.append((tile, model.read_result()))
        return reads
    return []
