"""Engine test scenario (pure Python) and the cocotb bench that plays it on ``GemmEngine`` Verilog.

:func:`engine_scenario` builds a seeded list of host commands that covers every kind of run (K = 1, K = depth,
K-split chains, all-extreme operands saturating both ways, shift 0 and 32, both modes, clear=0 after a drain,
rejected runs, seed reloads); :func:`expected_outputs` plays it on :class:`fxtrain.sim.engine.EngineModel`.
The same scenario drives the Amaranth-simulator test (``tests/test_engine_rtl.py``) and this cocotb bench
(``tests/test_engine_cocotb.py``), which adds seeded random ``valid``/``ready`` stalls on every stream.

Scenario commands (tuples):
``("seed", lane, value)``, ``("write_a", addr, entry)``, ``("write_b", addr, entry)`` (one entry: a list of raw
words), ``("run", a_base, b_base, k, clear, drain, shift, mode)`` or, on an engine with a partial-sum memory,
``("run", a_base, b_base, k, clear, drain, shift, mode, load, save, slot)``, ``("clear_counters",)``.
:func:`psum_scenario` (``psum_slots > 0``) plays K-split GEMMs chunk-outer over interleaved slots, as the
partial-sum planner does, plus the LOAD/SAVE edge cases.

Bench parameters (:func:`fxtrain.sim.runner.bench_params`): ``rows, cols, wl, depth, max_k_log2`` (the
``EngineConfig``), ``seed`` (scenario and stall seed), ``runs`` (random runs in the scenario),
``stall_probability`` (chance that a source holds back a payload in a cycle) and
``result_ready_probability`` (chance that the result sink is ready in a cycle) for the stalled test;
``psum_slots`` (default 0) selects :func:`psum_scenario`.

Members
-------
engine_scenario
    The command list.
psum_scenario
    The command list of an engine with a partial-sum memory.
expected_outputs
    Model results, run cycles and final counters of a command list.
schedule_runs
    The engine runs of a GEMM in the planner's order (LOAD/SAVE runs included).
busy_cycles_in_amaranth_sim
    Plays a list of runs on ``GemmEngine`` in the Amaranth simulator and returns its busy counter.
"""

from __future__ import annotations

import random

from ..engine import EngineModel, engine_layouts
from ..gemm import EngineConfig
from ..lfsr import lane_seeds
from ..runner import bench_params

__all__ = ["engine_scenario", "psum_scenario", "expected_outputs", "schedule_runs", "busy_cycles_in_amaranth_sim"]


def engine_scenario(config, seed, runs=8):
    """A seeded list of host commands exercising the engine (module docstring), including a ping-pong pair of
    runs whose second operands are written (by the cocotb bench) while the first run computes."""
    rng = random.Random(seed)
    rows, cols, depth, wl = config.rows, config.cols, config.depth, config.wl
    b_depth = config.b_depth
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    ops = [("seed", j, s) for j, s in enumerate(lane_seeds(seed, cols))]
    b_written = set()          # B entries written so far: runs read only those (SPRAM powers up undefined)

    def fill(which, base, k, values=None):
        width = rows if which == "write_a" else cols
        if which == "write_b":
            b_written.update(range(base, base + k))
        for i in range(k):
            entry = [rng.randint(lo, hi) if values is None else values for _ in range(width)]
            ops.append((which, base + i, entry))

    def run(a_base, b_base, k, clear, drain, shift=None, mode=None):
        shift = rng.randint(0, 32) if shift is None else shift
        mode = rng.randint(0, 1) if mode is None else mode
        ops.append(("run", a_base, b_base, k, clear, drain, shift, mode))

    # K = 1, nearest and stochastic, at the last entry of each memory
    fill("write_a", depth - 1, 1)
    fill("write_b", b_depth - 1, 1)
    run(depth - 1, b_depth - 1, 1, 1, 1, shift=2, mode=0)
    run(depth - 1, b_depth - 1, 1, 1, 1, shift=2, mode=1)
    if b_depth > depth:
        # B entries above A's range (a deeper B memory: the top depth entries, and across the middle)
        top, mid = b_depth - depth, b_depth // 2 - depth // 2
        fill("write_b", top, depth)
        fill("write_b", mid, depth)
        fill("write_a", 0, depth)
        run(0, top, depth, 1, 1, shift=wl, mode=1)
        run(0, mid, depth, 1, 0)
        run(0, top, depth, 0, 1, shift=wl - 1, mode=0)
    # K = depth, the whole memory
    fill("write_a", 0, depth)
    fill("write_b", 0, depth)
    run(0, 0, depth, 1, 1, shift=wl, mode=1)
    run(0, 0, depth, 1, 1, shift=wl, mode=0)
    # K-split chain over three address ranges: (1,0), (0,0), (0,1); partial sums never rounded
    third = max(1, depth // 3)
    run(0, 0, third, 1, 0)
    run(third, third, third, 0, 0)
    run(2 * third, 2 * third, depth - 2 * third, 0, 1, shift=wl - 1, mode=1)
    # ping-pong: the upper half is written while a run computes on the lower half (a safe overlap)
    half = depth // 2
    fill("write_a", 0, half)
    fill("write_b", 0, half)
    run(0, 0, half, 1, 0)
    fill("write_a", half, half)
    fill("write_b", half, half)
    run(half, half, half, 0, 1, shift=wl, mode=1)
    # after a drain the accumulators are 0: clear=0 starts from zero
    run(1, 2, 2, 0, 1, shift=0, mode=0)
    # rejected runs: k = 0, k > depth, a_base + k > depth, b_base + k > b_depth (nothing computed, no lane
    # advance)
    run(0, 0, 0, 1, 1)
    run(0, 0, depth + 1, 1, 1)
    run(depth - 1, 0, 2, 1, 1)
    run(0, b_depth - 1, 2, 1, 1)
    # all-extreme operands, saturating high (min*min) and low (min*max), shift 0 and 32
    fill("write_a", 0, 2, lo)
    fill("write_b", 0, 2, lo)
    fill("write_b", 2, 2, hi)
    run(0, 0, 2, 1, 1, shift=0, mode=0)
    run(0, 2, 2, 1, 1, shift=0, mode=1)
    run(0, 0, 2, 1, 1, shift=32, mode=1)
    run(0, 2, 2, 1, 1, shift=32, mode=0)
    ops.append(("clear_counters",))
    # reseed one lane, then random runs of every length over random, possibly resident, operands
    ops.append(("seed", cols - 1, rng.randint(1, (1 << 32) - 1)))
    for _ in range(runs):
        k = rng.randint(1, depth)
        a_base, b_base = rng.randint(0, depth - k), rng.randint(0, b_depth - k)
        if rng.random() < 0.7:
            fill("write_a", a_base, k)
        if rng.random() < 0.7 or not b_written.issuperset(range(b_base, b_base + k)):
            fill("write_b", b_base, k)
        run(a_base, b_base, k, rng.randint(0, 1), rng.random() < 0.7)
    run(0, 0, 1, 0, 1)
    return ops


def psum_scenario(config, seed, gemms=2):
    """A seeded command list for an engine with ``psum_slots > 0``: ``gemms`` random K-split GEMMs (each
    ``tiles`` tiles, random chunk lengths incl. K = 1, operands random or all-extreme so that both saturations
    occur) played chunk-outer: for each chunk, for each tile ``t`` of the group, write its A and B chunk and run
    with CLEAR (first chunk) or LOAD (later chunks), DRAIN (last chunk) or SAVE (earlier chunks), slot ``t`` (a
    group uses the slots in a random order); plus a SAVE then LOAD of the same slot back to back, LOAD+SAVE
    in one run, a LOAD that replaces non-zero accumulators, a LOAD of a slot never saved, and the rejected
    LOAD+CLEAR, SAVE+DRAIN and slot = psum_slots runs."""
    if config.psum_slots < 1:
        raise ValueError(f"psum_scenario needs an engine with psum_slots >= 1, not {config.psum_slots}")
    rng = random.Random(seed)
    rows, cols, depth, wl, slots = config.rows, config.cols, config.depth, config.wl, config.psum_slots
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    ops = [("seed", j, s) for j, s in enumerate(lane_seeds(seed, cols))]

    def fill(which, base, k, extreme=None):
        width = rows if which == "write_a" else cols
        for i in range(k):
            ops.append((which, base + i, [extreme if extreme is not None else rng.randint(lo, hi)
                                          for _ in range(width)]))

    def run(a_base, b_base, k, clear, drain, load, save, slot, shift=None, mode=None):
        shift = rng.randint(0, 32) if shift is None else shift
        mode = rng.randint(0, 1) if mode is None else mode
        ops.append(("run", a_base, b_base, k, clear, drain, shift, mode, load, save, slot))

    for g in range(gemms):
        tiles = rng.randint(1, slots)
        chunks = [rng.randint(1, depth) for _ in range(rng.randint(2, 4))]
        chunks[rng.randrange(len(chunks))] = 1                      # a K = 1 chunk
        order = rng.sample(range(slots), tiles)                     # tile t uses slot order[t]
        extreme = [(lo, lo), (lo, hi), (None, None)][g % 3]         # saturate high, low, or random
        shift, mode = rng.randint(0, wl), rng.randint(0, 1)
        for c, k in enumerate(chunks):
            first, last = c == 0, c == len(chunks) - 1
            for t in range(tiles):
                a_base, b_base = rng.randint(0, depth - k), rng.randint(0, config.b_depth - k)
                fill("write_a", a_base, k, extreme[0] if t == 0 else None)
                fill("write_b", b_base, k, extreme[1] if t == 0 else None)
                run(a_base, b_base, k, int(first), int(last), int(not first), int(not last), order[t], shift, mode)
    ops.append(("clear_counters",))
    fill("write_a", 0, depth)
    fill("write_b", 0, depth)
    top = slots - 1
    run(0, 0, depth, 1, 0, 0, 1, top)                   # save a full-depth sum ...
    run(1, 1, 1, 0, 1, 1, 0, top, shift=3, mode=1)      # ... and load it in the next cycle (back to back)
    run(0, 0, 2, 1, 0, 0, 1, 0)
    run(2, 2, 3, 0, 0, 1, 1, 0)                         # LOAD and SAVE in one run
    run(0, 0, depth, 1, 0, 0, 0, 0)                     # accumulators non-zero ...
    run(3, 3, 1, 0, 1, 1, 0, 0, shift=0, mode=0)        # ... LOAD replaces them
    run(0, 0, 1, 1, 0, 0, 0, 0)
    run(0, 0, 1, 0, 0, 1, 0, top)                       # LOAD again: a LOAD leaves the slot as it was
    run(1, 1, 1, 0, 1, 0, 0, 0, shift=1, mode=0)
    # rejected: LOAD+CLEAR, SAVE+DRAIN, slot = psum_slots with LOAD and with SAVE; slot ignored without them
    run(0, 0, 1, 1, 0, 1, 0, 0)
    run(0, 0, 1, 0, 1, 0, 1, 0)
    run(0, 0, 1, 0, 0, 1, 0, slots)
    run(0, 0, 1, 1, 0, 0, 1, 0xFFFF)
    run(0, 0, 2, 1, 1, 0, 0, 0xFFFF, shift=2, mode=1)
    return ops


def expected_outputs(config, ops):
    """Play ``ops`` on the model: ``(tiles, cycles, counters, error)``.

    ``tiles`` lists ``(out, sat)`` per drained tile (rows x cols nested lists), ``cycles`` the cycles of each
    run command in order, ``counters`` the model counters after the last command, ``error`` its error flag.
    """
    if not isinstance(config, EngineConfig):
        raise TypeError(f"Engine configuration must be an EngineConfig, not {config!r}")
    model = EngineModel(config)
    cycles = []
    for op in ops:
        if op[0] == "seed":
            model.set_seed(op[1], op[2])
        elif op[0] == "write_a":
            model.write_a(op[1], [op[2]])
        elif op[0] == "write_b":
            model.write_b(op[1], [op[2]])
        elif op[0] == "run":
            load, save, slot = op[8:] if len(op) > 8 else (0, 0, 0)
            cycles.append(model.run(*op[1:8], load=bool(load), save=bool(save), slot=slot))
        elif op[0] == "clear_counters":
            model.clear_counters()
        else:
            raise ValueError(f"Unknown scenario command {op!r}")
    tiles = [(out.tolist(), sat.tolist()) for out, sat in model.results]
    return tiles, cycles, dict(model.counters), model.error


# ---------------------------------------------------------------------------------------------------------------
# cocotb bench (runs inside the simulator; parameters from bench_params())

try:
    import cocotb
    from cocotb.triggers import ReadOnly, RisingEdge
except ImportError:         # the pure-Python part above works without cocotb
    cocotb = None


async def _play(dut, stall_probability, result_ready_probability, seed_offset):
    from .drivers import StreamSink, StreamSource, start_clock_and_reset, unpack

    params = bench_params()
    config = EngineConfig(**{name: params[name] for name in ("rows", "cols", "wl", "depth", "max_k_log2")},
                          b_depth=params.get("b_depth"), psum_slots=params.get("psum_slots", 0))
    seed = params["seed"] + seed_offset
    dut._log.info(f"scenario seed={seed} stall_probability={stall_probability} "
                  f"result_ready_probability={result_ready_probability}")
    layouts = engine_layouts(config)
    ops = (psum_scenario(config, seed) if config.psum_slots else engine_scenario(config, seed, params["runs"]))
    want_tiles, want_cycles, want_counters, want_error = expected_outputs(config, ops)

    for name in ("seed_load", "counters_clear", "shift", "mode", "seed", "seed_lane"):
        getattr(dut, name).value = 0
    dut.result__ready.value = 0
    await start_clock_and_reset(dut)
    keep = 1.0 - stall_probability
    sources = {name: StreamSource(dut, name, layouts[name], rng=random.Random(seed * 7 + i), valid_probability=keep)
               for i, name in enumerate(("a_write", "b_write", "run"))}
    sink = StreamSink(dut, "result", layouts["result"], rng=random.Random(seed * 7 + 3),
                      ready_probability=result_ready_probability)

    # per-cycle monitor: run handshakes, run.ready, counters, counters_clear pulses (index = cycle)
    trace = {"accept": [], "ready": [], "counters": [], "clear": [], "busy_writes": 0}

    async def monitor():
        cycle = 0
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            ready = int(dut.run__ready.value)
            trace["ready"].append(ready)
            trace["counters"].append(unpack(layouts["counters"], dut.counters.value))
            if ready and int(dut.run__valid.value):
                trace["accept"].append(cycle)
            if int(dut.busy.value):
                trace["busy_writes"] += sum(int(getattr(dut, f"{name}__valid").value)
                                            & int(getattr(dut, f"{name}__ready").value)
                                            for name in ("a_write", "b_write"))
            if int(dut.counters_clear.value):
                trace["clear"].append(cycle)
            cycle += 1

    cocotb.start_soon(monitor())

    async def engine_idle():
        await sources["run"].wait_idle()
        while True:
            await ReadOnly()
            if not int(dut.busy.value):
                break
            await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)

    async def pulse(assignments):
        await engine_idle()
        for name, value in assignments.items():
            getattr(dut, name).value = value
        await RisingEdge(dut.clk)
        dut.seed_load.value = 0
        dut.counters_clear.value = 0

    recent = []                                   # runs that may still be queued or executing
    for op in ops:
        if op[0] == "seed":
            await pulse({"seed_lane": op[1], "seed": op[2], "seed_load": 1})
        elif op[0] == "clear_counters":
            await pulse({"counters_clear": 1})
        elif op[0] in ("write_a", "write_b"):
            which = 1 if op[0] == "write_a" else 2
            if any(r[which] <= op[1] < r[which] + r[3] for r in recent):
                await engine_idle()               # never write into the range of a run in progress
                recent.clear()
            sources["a_write" if which == 1 else "b_write"].send({"addr": op[1], "data": op[2]})
        else:
            await sources["a_write"].wait_idle()
            await sources["b_write"].wait_idle()
            await sources["run"].wait_idle()      # shift/mode belong to the previous run until it is accepted
            dut.shift.value = op[6]
            dut.mode.value = op[7]
            payload = {"a_base": op[1], "b_base": op[2], "k": op[3], "clear": op[4], "drain": int(op[5])}
            if config.psum_slots:
                payload.update(zip(("load", "save", "slot"), op[8:] if len(op) > 8 else (0, 0, 0)))
            sources["run"].send(payload)
            recent = recent[-1:] + [op]
    await engine_idle()
    await sink.wait_for(len(want_tiles) * config.rows)
    for _ in range(3):
        await RisingEdge(dut.clk)
    await ReadOnly()
    error = int(dut.error.value)
    last = len(trace["counters"]) - 1
    counters = trace["counters"][last]

    rows = sink.received
    assert len(rows) == len(want_tiles) * config.rows, (len(rows), len(want_tiles))
    for t, (want_out, want_sat) in enumerate(want_tiles):
        for r in range(config.rows):
            got = rows[t * config.rows + r]
            sat = [bool((got["sat"] >> j) & 1) for j in range(config.cols)]
            assert got["data"] == want_out[r] and sat == want_sat[r], \
                f"tile {t} row {r}: got {got['data']} {sat}, want {want_out[r]} {want_sat[r]}"
            assert got["last"] == (r == config.rows - 1)
    accepts = trace["accept"]
    assert len(accepts) == len(want_cycles)
    for i, (t0, want) in enumerate(zip(accepts, want_cycles)):
        t = next(c for c in range(t0 + 1, len(trace["ready"])) if trace["ready"][c])
        measured = t - t0 - (trace["counters"][t]["stall_out"] - trace["counters"][t0]["stall_out"])
        assert measured == want, f"run {i} ({[op for op in ops if op[0] == 'run'][i]}): {measured} != {want} cycles"
    for name in ("busy", "saturated", "runs", "rejected"):
        assert counters[name] == want_counters[name], f"counter {name}: {counters[name]} != {want_counters[name]}"
    assert bool(error) == want_error
    since_clear = last - trace["clear"][-1] - 1
    assert counters["busy"] + counters["stall_in"] + counters["stall_out"] == since_clear, (counters, since_clear)
    stall_cycles = sum(b["stall_out"] > a["stall_out"] for a, b in zip(trace["counters"], trace["counters"][1:]))
    if result_ready_probability == 1.0:
        assert stall_cycles == 0
    elif result_ready_probability <= 0.1:
        assert stall_cycles > 0, "the slow result sink never made a drain wait: the test lost its point"
    assert trace["busy_writes"] > 0, "no operand write overlapped a run: the ping-pong case lost its point"
    dut._log.info(f"{len(want_tiles)} tiles, {len(want_cycles)} runs bit-exact; {trace['busy_writes']} operand "
                  f"writes during runs; {stall_cycles} output-stall cycles; final counters {counters}")


if cocotb is not None:
    @cocotb.test()
    async def engine_without_stalls(dut):
        """Scenario with streams always valid/ready: results, per-run cycles and counters equal the model."""
        await _play(dut, 0.0, 1.0, 0)

    @cocotb.test()
    async def engine_with_random_stalls(dut):
        """Same checks with seeded random valid stalls on every source and a result sink that is rarely ready
        (drains then wait for a result bank: counters.stall_out > 0), on another scenario seed."""
        params = bench_params()
        await _play(dut, float(params.get("stall_probability", 0.3)),
                    float(params.get("result_ready_probability", 0.05)), 1)


def schedule_runs(config, m, k, n, rounding=(0, 0)):
    """The engine runs of an ``M x K x N`` GEMM in the order the one planner issues them
    (:class:`fxtrain.sim.planner.CommandPlanner`, as the driver sends them): its
    :class:`~fxtrain.sim.schedule_items.Run` items (a K-split on an engine with a partial-sum memory: chunk-outer,
    with LOAD/SAVE and slots), each RUN_TILES as its ``n_tiles`` CLEAR+DRAIN runs (B base stepped by ``b_step``)."""
    from ..gemm_plan import plan_gemm
    from ..payloads import RUN_CLEAR, RUN_DRAIN
    from ..planner import CommandPlanner
    from ..schedule_items import Run, RunTiles

    runs = []
    for item in CommandPlanner(config).schedule(plan_gemm(config, m, k, n), rounding):
        if isinstance(item, Run):
            runs.append(item)
        elif isinstance(item, RunTiles):
            runs += [Run(item.a_base, item.b_base + t * item.b_step, item.k, RUN_CLEAR | RUN_DRAIN)
                     for t in range(item.n_tiles)]
    return runs


def busy_cycles_in_amaranth_sim(config, runs):
    """The RTL's busy counter after playing ``runs`` back to back on ``GemmEngine(config)`` in the Amaranth
    simulator (results always accepted, operand memories as reset). A run is ``(k, drain)`` (a clearing run from
    address 0) or a :class:`fxtrain.sim.schedule_items.Run` (its addresses, flags and partial-sum slot)."""
    from amaranth.sim import Simulator

    from ...rtl.engine import GemmEngine
    from ..schedule_items import Run

    dut = GemmEngine(config)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {}

    def payload(run):
        if not isinstance(run, Run):
            k, drain = run
            return {"a_base": 0, "b_base": 0, "k": k, "clear": 1, "drain": int(drain)}
        fields = {"a_base": run.a_base, "b_base": run.b_base, "k": run.k, "clear": int(run.clear),
                  "drain": int(run.drain)}
        if config.psum_slots:
            fields.update(load=int(run.load), save=int(run.save), slot=run.slot)
        elif run.load or run.save:
            raise ValueError(f"{run} needs an engine with a partial-sum memory (psum_slots = 0)")
        return fields

    async def host(ctx):
        ctx.set(dut.result.ready, 1)
        for run in runs:
            ctx.set(dut.run.payload, payload(run))
            ctx.set(dut.run.valid, 1)
            await ctx.tick().until(dut.run.ready)
            ctx.set(dut.run.valid, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        await ctx.tick()
        seen["busy"] = ctx.get(dut.counters.busy)

    sim.add_testbench(host)
    sim.run()
    return seen["busy"]
