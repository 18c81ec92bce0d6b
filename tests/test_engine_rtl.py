"""GemmEngine RTL in the Amaranth simulator: bit-exact results, exact cycle counts and counters vs the model."""

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from fxtrain.rtl.array import SystolicArray
from fxtrain.rtl.engine import GemmEngine
from fxtrain.sim.benches.engine_bench import engine_scenario, expected_outputs
from fxtrain.sim.engine import EngineModel, gemm_via_engine, run_cycles
from fxtrain.sim.gemm import EngineConfig, tiled_gemm
from fxtrain.sim.lfsr import lane_seeds


def simulate(config, ops, seed, ready_probability=1.0, write_gap=0.0):
    """Play ``ops`` on a GemmEngine; returns (tiles, measured run cycles, counters, error, stall_out per run).

    A host testbench sends one command at a time (waiting ``write_gap``-random idle cycles between operand
    writes) and waits for each run to end (``run.ready`` high again); measured run cycles exclude the cycles the
    drain waited for a result bank (``counters.stall_out`` growth during the run). A background sink takes
    result rows with ready high with probability ``ready_probability``.
    """
    dut = GemmEngine(config)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    rng = random.Random(seed)
    rows_seen, cycles, stalls = [], [], []
    final = {}

    async def host(ctx):
        for op in ops:
            if op[0] == "seed":
                ctx.set(dut.seed_lane, op[1])
                ctx.set(dut.seed, op[2])
                ctx.set(dut.seed_load, 1)
                await ctx.tick()
                ctx.set(dut.seed_load, 0)
            elif op[0] in ("write_a", "write_b"):
                port = dut.a_write if op[0] == "write_a" else dut.b_write
                while rng.random() < write_gap:
                    await ctx.tick()
                ctx.set(port.payload, {"addr": op[1], "data": op[2]})
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
            elif op[0] == "clear_counters":
                ctx.set(dut.counters_clear, 1)
                await ctx.tick()
                ctx.set(dut.counters_clear, 0)
            else:
                _, a_base, b_base, k, clear, drain, shift, mode = op[:8]
                payload = {"a_base": a_base, "b_base": b_base, "k": k, "clear": clear, "drain": int(drain)}
                if len(op) > 8:
                    payload.update(zip(("load", "save", "slot"), op[8:]))
                ctx.set(dut.run.payload, payload)
                ctx.set(dut.shift, shift)
                ctx.set(dut.mode, mode)
                ctx.set(dut.run.valid, 1)
                await ctx.tick().until(dut.run.ready)
                ctx.set(dut.run.valid, 0)
                stall0 = ctx.get(dut.counters.stall_out)
                n = 1
                while not ctx.get(dut.run.ready):
                    await ctx.tick()
                    n += 1
                stall = ctx.get(dut.counters.stall_out) - stall0
                cycles.append(n - stall)
                stalls.append(stall)
        for _ in range(4 * config.rows * (1 + int(1 / ready_probability))):
            await ctx.tick()
        final["counters"] = {name: ctx.get(dut.counters[name]) for name in dut.layouts["counters"].members}
        final["error"] = ctx.get(dut.error)

    async def sink(ctx):
        while True:
            ready = rng.random() < ready_probability
            ctx.set(dut.result.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.result.valid, dut.result.payload)
            if ready and valid:
                rows_seen.append(([payload.data[j] for j in range(config.cols)],
                                  [bool((payload.sat >> j) & 1) for j in range(config.cols)], payload.last))

    sim.add_testbench(host)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert all(last == (i % config.rows == config.rows - 1) for i, (_, _, last) in enumerate(rows_seen))
    tiles = [([rows_seen[t * config.rows + r][0] for r in range(config.rows)],
              [rows_seen[t * config.rows + r][1] for r in range(config.rows)])
             for t in range(len(rows_seen) // config.rows)]
    assert len(rows_seen) % config.rows == 0
    return tiles, cycles, final["counters"], final["error"], stalls


GEOMETRIES = [(2, 4), (4, 4), (3, 1)]


@pytest.mark.parametrize("rows,cols", GEOMETRIES)
def test_engine_matches_model(rows, cols):
    """Every output word, saturation flag, run cycle count, counter and the error flag equal the model's, over
    K=1, K=depth, K-split, extreme operands, shift 0/32, both modes, rejected runs and random runs."""
    seed = 31 * rows + cols
    print(f"seed={seed}")
    config = EngineConfig(rows=rows, cols=cols, wl=8, depth=8, max_k_log2=6)
    counters = check_against_model(config, engine_scenario(config, seed, runs=6), seed)
    assert counters["stall_out"] == 0


def check_against_model(config, ops, seed):
    """Simulate ``ops`` on the RTL engine and assert every drained tile, every run's cycles, the busy, saturated,
    runs and rejected counters and the error flag equal the model's; returns the RTL's counters."""
    want_tiles, want_cycles, want_counters, want_error = expected_outputs(config, ops)
    tiles, cycles, counters, error, _ = simulate(config, ops, seed)
    assert len(tiles) == len(want_tiles)
    for i, (got, want) in enumerate(zip(tiles, want_tiles)):
        assert got == want, f"tile {i}"
    assert cycles == want_cycles
    for name in ("busy", "saturated", "runs", "rejected"):
        assert counters[name] == want_counters[name], name
    assert error == want_error
    return counters


@pytest.mark.parametrize("rows,cols,b_depth", [(2, 4, 32), (3, 1, 1024)])
def test_engine_with_a_deeper_b_memory_matches_model(rows, cols, b_depth):
    """A B memory deeper than A's (depth 8): the scenario adds K = 1 at B's last entry, full-depth runs on B
    entries above A's range and across B's middle, b_base + k > b_depth rejected, random runs anywhere in B;
    every output, run cycle count, counter and the error flag equal the model's."""
    seed = 300 + b_depth + rows
    print(f"seed={seed}")
    config = EngineConfig(rows=rows, cols=cols, wl=8, depth=8, max_k_log2=6, b_depth=b_depth)
    ops = engine_scenario(config, seed, runs=8)
    assert any(op[0] == "run" and op[2] >= 8 for op in ops)
    want_tiles, want_cycles, want_counters, want_error = expected_outputs(config, ops)
    tiles, cycles, counters, error, _ = simulate(config, ops, seed)
    assert tiles == want_tiles
    assert cycles == want_cycles
    for name in ("busy", "saturated", "runs", "rejected"):
        assert counters[name] == want_counters[name], name
    assert error == want_error


def test_b_write_waits_while_a_run_reads_b():
    """b_write is not ready in the cycles a run reads the B memory (its accept cycle and the k - 1 COMPUTE cycles:
    the rule that lets B live in single-ported SPRAM) and ready again right after; a B write offered during the
    run lands after it, so the run uses the old entry and the next run the new one; A stays always ready."""
    config = EngineConfig(rows=1, cols=2, wl=8, depth=8, max_k_log2=6, b_depth=16)
    dut = GemmEngine(config)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {}
    k = 5

    async def bench(ctx):
        ctx.set(dut.result.ready, 1)
        for i in range(k):
            for port, data in ((dut.a_write, [i + 1]), (dut.b_write, [1, -1])):
                ctx.set(port.payload, {"addr": i if port is dut.a_write else 10 + i, "data": data})
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
        ctx.set(dut.run.payload, {"a_base": 0, "b_base": 10, "k": k, "clear": 1, "drain": 1})
        ctx.set(dut.run.valid, 1)
        ctx.set(dut.b_write.payload, {"addr": 12, "data": [7, 7]})   # entry 12 is read in the run's cycle 2
        ctx.set(dut.b_write.valid, 1)
        ready = []
        for _ in range(k + 2):
            _, _, b_ready, a_ready = await ctx.tick().sample(dut.b_write.ready, dut.a_write.ready)
            ctx.set(dut.run.valid, 0)
            ready.append((b_ready, a_ready))
            if b_ready:
                ctx.set(dut.b_write.valid, 0)
        seen["ready"] = ready
        while ctx.get(dut.busy):
            await ctx.tick()
        ctx.set(dut.run.payload, {"a_base": 0, "b_base": 10, "k": k, "clear": 1, "drain": 1})
        ctx.set(dut.run.valid, 1)
        await ctx.tick().until(dut.run.ready)
        ctx.set(dut.run.valid, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        for _ in range(4):
            await ctx.tick()

    results = []

    async def sink(ctx):
        while True:
            _, _, valid, payload = await ctx.tick().sample(dut.result.valid, dut.result.payload)
            if valid:
                results.append([payload.data[j] for j in range(config.cols)])

    sim.add_testbench(bench)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert [b for b, _ in seen["ready"]] == [0] * k + [1, 1]
    assert all(a for _, a in seen["ready"])
    total = sum(range(1, k + 1))
    # entry 12 is B row i = 2, which meets A entry 2 (= 3): old [1, -1], new [7, 7]
    assert results == [[total, -total], [total - 3 + 3 * 7, -total + 3 + 3 * 7]]


def test_output_stalls_change_nothing_but_stall_counter():
    """A result stream that is rarely ready makes drains wait (stall_out > 0) but changes no result, and
    run cycles net of the wait still equal the closed form; busy + stall_in + stall_out counts every cycle."""
    seed = 77
    print(f"seed={seed}")
    config = EngineConfig(rows=2, cols=3, wl=6, depth=4, max_k_log2=4)
    ops = [op for op in engine_scenario(config, seed, runs=6)]
    want_tiles, want_cycles, want_counters, _ = expected_outputs(config, ops)
    tiles, cycles, counters, _, stalls = simulate(config, ops, seed, ready_probability=0.15, write_gap=0.3)
    assert tiles == want_tiles
    assert cycles == want_cycles
    assert sum(stalls) > 0 and counters["stall_out"] > 0
    assert counters["busy"] == want_counters["busy"]


def test_run_cycles_of_every_k():
    """Back-to-back runs: the measured occupancy of a run is run_cycles(k, drain) for every k of a depth-8 engine."""
    config = EngineConfig(rows=2, cols=2, wl=4, depth=8, max_k_log2=4)
    ops = [("run", 0, 0, k, 1, drain, 1, 0) for k in range(1, 9) for drain in (0, 1)]
    _, cycles, counters, _, _ = simulate(config, ops, 0)
    assert cycles == [run_cycles(config, op[3], op[5]) for op in ops]
    assert counters["busy"] == sum(cycles)


def test_validation():
    """Bad parameters raise with the bad value in the message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # the half-built objects are never elaborated
        with pytest.raises(TypeError, match="EngineConfig"):
            GemmEngine((4, 4))
        with pytest.raises(ValueError, match="not 33"):
            SystolicArray(33, 2, 8, 20)
        with pytest.raises(ValueError, match="not 10"):
            SystolicArray(2, 2, 8, 10)
        gc.collect()


def test_counters_partition_cycles():
    """Every cycle after counters_clear counts in exactly one of busy, stall_in, stall_out; busy sums run_cycles."""
    config = EngineConfig(rows=2, cols=2, wl=4, depth=4, max_k_log2=4)
    dut = GemmEngine(config)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.result.ready, 1)
        ctx.set(dut.counters_clear, 1)
        await ctx.tick()
        ctx.set(dut.counters_clear, 0)
        ticks = 0
        for k, drain in ((1, 1), (4, 0), (3, 1)):
            for _ in range(3):
                await ctx.tick()
                ticks += 1
            ctx.set(dut.run.payload, {"a_base": 0, "b_base": 0, "k": k, "clear": 1, "drain": drain})
            ctx.set(dut.run.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.run.ready)
                ticks += 1
                if ready:
                    break
            ctx.set(dut.run.valid, 0)
        for _ in range(40):
            await ctx.tick()
            ticks += 1
        seen.update({name: ctx.get(dut.counters[name]) for name in ("busy", "stall_in", "stall_out")})
        seen["ticks"] = ticks

    sim.add_testbench(bench)
    sim.run()
    assert seen["busy"] == run_cycles(config, 1, 1) + run_cycles(config, 4, 0) + run_cycles(config, 3, 1)
    assert seen["stall_out"] == 0
    assert seen["busy"] + seen["stall_in"] + seen["stall_out"] == seen["ticks"]


def test_shift_above_32_acts_as_32():
    """The 6-bit shift port can carry 33..63; the engine rounds those runs exactly like shift 32 (documented)."""
    config = EngineConfig(rows=2, cols=2, wl=8, depth=4, max_k_log2=4)
    setup = [("seed", 0, 123), ("seed", 1, 456), ("write_a", 0, [-128, 127]), ("write_b", 0, [-128, 127])]
    runs = [("run", 0, 0, 1, 1, 1, shift, mode) for shift in (33, 63) for mode in (0, 1)]
    tiles, _, _, _, _ = simulate(config, setup + runs, 5)
    want, _, _, _ = expected_outputs(config, setup + [op[:6] + (32, op[7]) for op in runs])
    assert tiles == want


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3)])
def test_rounding_parameters_change_at_every_back_to_back_run(rows, cols):
    """The rounders decode shift/mode a cycle ahead (StochasticRounder shift_setup = 1): K = 1 and K = 2 drained
    runs, each accepted in the first idle cycle after the previous one (the shortest gap from one run's last
    rounding to the next run's parameters) and from accept to the first rounding (1 x 1: FLUSH of one cycle),
    with shift and mode changed at every run (0 <-> 32 and neighbours), round exactly like the model."""
    seed = 41 + rows
    print(f"seed={seed}")
    rng = random.Random(seed)
    config = EngineConfig(rows=rows, cols=cols, wl=8, depth=4, max_k_log2=4)
    ops = [("seed", j, s) for j, s in enumerate(lane_seeds(seed, cols))]
    ops += [("write_a", i, [rng.randint(-128, 127) for _ in range(rows)]) for i in range(2)]
    ops += [("write_b", i, [rng.randint(-128, 127) for _ in range(cols)]) for i in range(2)]
    params = [(0, 0), (32, 1), (1, 0), (31, 1), (7, 1), (0, 1), (32, 0), (6, 0), (7, 1), (5, 0)]
    ops += [("run", 0, 0, 1 + i % 2, 1, 1, shift, mode) for i, (shift, mode) in enumerate(params)]
    check_against_model(config, ops, seed)
    shifted = [op[:6] + ((op[6] + 1) % 33,) + op[7:] if op[0] == "run" else op for op in ops]
    assert expected_outputs(config, shifted)[0] != expected_outputs(config, ops)[0]    # the shifts matter


class _RecordingModel(EngineModel):
    """An EngineModel that also records the host commands it receives, as engine_bench scenario commands."""

    def __init__(self, config):
        super().__init__(config)
        self.ops = []

    def write_a(self, addr, entries):
        super().write_a(addr, entries)
        self.ops += [("write_a", addr + i, [int(v) for v in e]) for i, e in enumerate(np.atleast_2d(entries))]

    def write_b(self, addr, entries):
        super().write_b(addr, entries)
        self.ops += [("write_b", addr + i, [int(v) for v in e]) for i, e in enumerate(np.atleast_2d(entries))]

    def set_seed(self, lane, seed):
        super().set_seed(lane, seed)
        self.ops.append(("seed", lane, seed))

    def run(self, a_base, b_base, k, clear, drain, shift=0, mode=0):
        self.ops.append(("run", a_base, b_base, k, int(clear), int(drain), shift, int(mode)))
        return super().run(a_base, b_base, k, clear, drain, shift, mode)


@pytest.mark.parametrize("mode", [0, 1])
def test_whole_gemm_on_rtl_equals_tiled_gemm(mode):
    """The canonical host tiling (padded M and N, K split in depth-sized chunks) played on the RTL gives
    sim.gemm.tiled_gemm's outputs and saturation flags bit for bit, two GEMMs in a row (lanes persist)."""
    seed = 11 + mode
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    config = EngineConfig(rows=2, cols=4, wl=8, depth=4, max_k_log2=6)
    model = _RecordingModel(config)
    model.set_seeds(lane_seeds(seed, config.cols))
    state = list(model.lane_state)
    want = []
    for m, k, n, shift in [(5, 11, 6, 7), (3, 4, 9, 12)]:
        a = rng.integers(-128, 128, (m, k))
        b = rng.integers(-128, 128, (k, n))
        ref = tiled_gemm(config, a, b, shift, mode, state)
        state = ref.lane_state
        got = gemm_via_engine(model, a, b, shift, mode)
        np.testing.assert_array_equal(got.c, ref.c)
        want.append((m, n, ref))
    tiles, _, _, _, _ = simulate(config, model.ops, seed)
    for m, n, ref in want:
        mt, nt = -(-m // config.rows), -(-n // config.cols)
        c = np.zeros((mt * config.rows, nt * config.cols), dtype=np.int64)
        sat = np.zeros(c.shape, dtype=bool)
        for tm in range(mt):
            for tn in range(nt):
                out, s = tiles.pop(0)
                c[tm * config.rows:(tm + 1) * config.rows, tn * config.cols:(tn + 1) * config.cols] = out
                sat[tm * config.rows:(tm + 1) * config.rows, tn * config.cols:(tn + 1) * config.cols] = s
        np.testing.assert_array_equal(c[:m, :n], ref.c)
        np.testing.assert_array_equal(sat[:m, :n], ref.saturated)
    assert not tiles
