"""The RTL EXPAND walker (``rtl/expander.py``) against its golden model ``sim.conv.expand_entries``: the A entries
it writes (values, addresses, order) and its cycles (``expand_cycles``), on a B memory holding a packed feature
map among garbage, for random geometries (strides, padding, 1x1/3x3 kernels), both orientations, several blocks,
an ``f_base`` near ``b_depth`` (B addresses wrap) and odd array shapes."""

import random
from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import memory
from amaranth.sim import Simulator

from fxtrain.rtl.expander import Expander
from fxtrain.rtl.soc import AcceleratorSoC
from fxtrain.sim.benches.link_bench import without_timing_counters
from fxtrain.sim.benches.expand_frames import expand_requests, random_expand_case
from fxtrain.sim.conv import EXPAND_ARGS, ConvGeometry, expand_cycles, expand_entries, fmap_pack
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.protocol import Command, ProtocolEmulator, ResponseParser, Status

SEED = 1301


def random_case(cfg, rng, f_base=None):
    """A random case and a B memory holding its packed map at ``f_base`` (mod b_depth), garbage elsewhere."""
    geom, x, _, args = random_expand_case(cfg, rng, f_base)
    lim = 1 << (cfg.wl - 1)
    b_mem = rng.integers(-lim, lim, (cfg.b_depth, cfg.cols))
    f_base = EXPAND_ARGS.unpack(args)["f_base"]
    for i, row in enumerate(fmap_pack(cfg, x)):
        b_mem[(f_base + i) % cfg.b_depth] = row
    return geom, b_mem, args


def run_expander(cfg, b_mem, args):
    """Simulate the walker on ``b_mem``: ``(writes, done_cycle, read_cycles)``, ``writes`` = [(cycle, addr,
    values)] with cycles counted from ``start``."""
    dut = Expander(cfg)
    m = Module()
    m.submodules.dut = dut
    lim = 1 << cfg.wl
    m.submodules.b = b = memory.Memory(shape=len(dut.b_data.as_value()), depth=cfg.b_depth,
                                       init=[sum((int(v) % lim) << (cfg.wl * j) for j, v in enumerate(row))
                                             for row in b_mem])
    rd = b.read_port()
    m.d.comb += [rd.addr.eq(dut.b_addr), dut.b_data.eq(rd.data)]
    fields = EXPAND_ARGS.unpack(args)
    total = expand_cycles(cfg, fields["count"], fields["blocks"])
    writes, done, reads = [], [], 0

    async def bench(ctx):
        nonlocal reads
        ctx.set(dut.args.as_value(), int.from_bytes(args, "little"))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for cycle in range(total + 3):
            if ctx.get(dut.a_write.valid):
                p = dut.a_write.payload
                writes.append((cycle, ctx.get(p.addr), [ctx.get(p.data[r]) for r in range(cfg.rows)]))
            if ctx.get(dut.done):
                done.append(cycle)
            reads += ctx.get(dut.b_read)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return writes, done, reads


def _config(rows, cols, depth, b_depth):
    """An engine with the expander (8-bit words on odd widths, 16-bit otherwise)."""
    return EngineConfig(rows=rows, cols=cols, wl=8 if cols % 2 else 16, depth=depth, max_k_log2=12,
                        b_depth=b_depth, expander=True)


@pytest.mark.parametrize("rows, cols, depth, b_depth, cases", [
    (4, 2, 64, 256, 10), (3, 5, 32, 128, 8), (1, 1, 32, 64, 6), (2, 8, 64, 64, 6), (7, 4, 32, 512, 4)])
def test_expander_writes_the_model_entries_in_expand_cycles(rows, cols, depth, b_depth, cases):
    """Every A write equals expand_entries' entry (value, address a_base + b*count + i, in order, one per rows
    cycles after the first), B is read in exactly V = blocks*count*rows cycles, and ``done`` marks the last write
    in cycle expand_cycles - 1 after start (EXPAND_LATENCY)."""
    seed = SEED + 1000 * rows + cols
    rng = np.random.default_rng(seed)
    print("seed", seed)
    cfg = _config(rows, cols, depth, b_depth)
    for case in range(cases):
        f_base = b_depth - 1 - case if case < 2 else None        # the map wraps past the last B entry
        geom, b_mem, args = random_case(cfg, rng, f_base)
        fields = EXPAND_ARGS.unpack(args)
        want = expand_entries(cfg, b_mem, args)
        writes, done, reads = run_expander(cfg, b_mem, args)
        n = fields["blocks"] * fields["count"]
        total = expand_cycles(cfg, fields["count"], fields["blocks"])
        assert reads == n * rows, (geom, fields)
        assert done == [total - 1], (geom, fields)
        assert [w[1] for w in writes] == [fields["a_base"] + i for i in range(n)]
        assert [w[0] for w in writes] == [rows * (i + 1) + 1 for i in range(n)]
        assert np.array([w[2] for w in writes]).tolist() == want.tolist(), (geom, fields)


def _run_soc(config, stream, rng=None, p_valid=1.0, p_ready=1.0, idle_after=60):
    """The byte-stream SoC fed ``stream`` (input offered / output ready with the given chances, ``rng`` a
    random.Random): ``(response bytes, cycles the request bytes were taken, cycles the response bytes left)``."""
    soc = AcceleratorSoC(config, 12_000_000, 3_000_000, byte_stream=True, frame_timeout=5000)
    out, taken, emitted = bytearray(), [], []

    async def bench(ctx):
        i = idle = cycle = 0
        while idle < idle_after:
            offer = i < len(stream) and (p_valid >= 1.0 or rng.random() < p_valid)
            ctx.set(soc.tx_bytes.ready, p_ready >= 1.0 or rng.random() < p_ready)
            if offer:
                ctx.set(soc.rx_bytes.payload, stream[i])
            ctx.set(soc.rx_bytes.valid, offer)
            _, _, valid, ready, tx_valid, tx_ready, tx_byte = await ctx.tick().sample(
                soc.rx_bytes.valid, soc.rx_bytes.ready, soc.tx_bytes.valid, soc.tx_bytes.ready, soc.tx_bytes.payload)
            if valid and ready:
                taken.append(cycle)
                i += 1
            if tx_valid and tx_ready:
                out.append(tx_byte)
                emitted.append(cycle)
            idle = idle + 1 if i >= len(stream) and not tx_valid else 0
            cycle += 1

    sim = Simulator(soc)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bytes(out), taken, emitted


SOC_CASES = [(4, 2, 64, 256, 3), (3, 5, 32, 128, 2), (1, 1, 32, 64, 2)]


@pytest.mark.parametrize("rows, cols, depth, b_depth, cases", SOC_CASES)
def test_soc_answers_expand_like_the_emulator_in_expand_cycles(rows, cols, depth, b_depth, cases):
    """The Amaranth-simulated SoC answers WRITE_B (map and weights), EXPAND, RUN, READ_RESULT, RUN_TILES,
    rejected EXPANDs (A range too long, zero kernel: BAD_ARGUMENT, nothing written) and READ_COUNTERS byte for
    byte like ProtocolEmulator (random geometries, both orientations, f_base near b_depth in the first case so
    the map wraps), and an accepted EXPAND's first response byte leaves 5 + expand_cycles cycles after its last
    request byte (IDENTIFY's 5, rtl/command.py, plus the walk)."""
    seed = SEED + 7 * rows + cols
    rng = np.random.default_rng(seed)
    print("seed", seed)
    cfg = _config(rows, cols, depth, b_depth)
    for case in range(cases):
        frames = expand_requests(cfg, rng, 10, f_base=b_depth - 2 if case == 0 else None)
        stream = b"".join(frames)
        expected = ProtocolEmulator(cfg, 12_000_000, 3_000_000, frame_timeout=5000).feed(stream)
        got, taken, emitted = _run_soc(cfg, stream)
        exp_r, got_r = ResponseParser().feed(expected), ResponseParser().feed(got)
        statuses = [Status(r.status).name for r in exp_r]
        assert statuses.count("BAD_ARGUMENT") == 2 and "UNKNOWN_COMMAND" not in statuses, statuses
        assert without_timing_counters(got_r) == without_timing_counters(exp_r)
        # the accepted EXPAND (seq 2): last request byte -> first response byte
        k = [i for i, f in enumerate(frames) if f[1] == Command.EXPAND][0]
        last_in = taken[sum(len(f) for f in frames[:k + 1]) - 1]
        first_out = emitted[sum(len(r) for r in _split(expected)[:k])]
        fields = EXPAND_ARGS.unpack(frames[k][5:-2])
        assert first_out - last_in == 5 + expand_cycles(cfg, fields["count"], fields["blocks"])


def _split(responses):
    """The response frames of a byte string, as bytes."""
    out, i = [], 0
    while i < len(responses):
        n = 8 + int.from_bytes(responses[i + 4:i + 6], "little")
        out.append(responses[i:i + n])
        i += n
    return out


def test_soc_expand_with_random_stalls():
    """EXPAND scripts with the input's valid and the output's ready dropped at random (3x5 array, map wrapping
    past the last B entry): the responses equal the emulator's byte for byte."""
    seed = SEED + 99
    rng, srng = np.random.default_rng(seed), random.Random(seed)
    print("seed", seed)
    cfg = EngineConfig(rows=3, cols=5, wl=8, depth=32, max_k_log2=12, b_depth=128, expander=True)
    stream = b"".join(expand_requests(cfg, rng, 10, f_base=126))
    expected = ProtocolEmulator(cfg, 12_000_000, 3_000_000, frame_timeout=5000).feed(stream)
    got, _, _ = _run_soc(cfg, stream, srng, 0.6, 0.3)
    assert without_timing_counters(ResponseParser().feed(got)) == without_timing_counters(ResponseParser().feed(expected))


def test_soc_without_expander_answers_unknown_command():
    """A device without an expander (EngineConfig.expander False) answers EXPAND with UNKNOWN_COMMAND, like the
    emulator, and has no expander in its design."""
    cfg = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12)
    stream = b"".join(expand_requests(replace(cfg, expander=True), np.random.default_rng(SEED), 1)[-6:-3])
    expected = ProtocolEmulator(cfg, 12_000_000, 3_000_000, frame_timeout=5000).feed(stream)
    got, _, _ = _run_soc(cfg, stream)
    assert got == expected
    assert {Status(r.status).name for r in ResponseParser().feed(got)} >= {"UNKNOWN_COMMAND"}


def test_board_targets_expander_choice():
    """The ULX3S (ECP5) targets build the expander, the iCEBreaker (UP5K, no logic cells left) does not;
    ``with_options(expander=...)`` (``fxtrain build --expander on|off``) switches it."""
    from fxtrain.boards.targets import TARGETS

    assert all(TARGETS[f"ulx3s-{v}"].config.expander for v in ("12f", "25f", "45f", "85f"))
    assert not TARGETS["icebreaker"].config.expander
    assert TARGETS["icebreaker"].with_options(expander=True).config.expander
    assert not TARGETS["ulx3s-12f"].with_options(expander=False).config.expander


@pytest.mark.parametrize("geom", [pytest.param(ConvGeometry(1, 6, 12, 12, 5, 5), marks=pytest.mark.slow),
                                  ConvGeometry(2, 3, 9, 9, 3, 3, 2, 2, 1, 1)],
                         ids=["lenet-conv2", "3x3-stride2-pad1"])
def test_soc_expand_layer_shapes_on_the_12f_geometry(geom):
    """LeNet's conv2 shape (batch 1) and a padded stride-2 3x3 layer on the ULX3S-12F's 7 x 4 array
    (depth 512): long walks (up to depth entries of 7 rows, many blocks) answer like the emulator, in
    5 + expand_cycles cycles."""
    seed = SEED + geom.c * 100 + geom.h
    rng = np.random.default_rng(seed)
    print("seed", seed)
    cfg = EngineConfig(rows=7, cols=4, wl=16, depth=512, max_k_log2=16, b_depth=1024, expander=True)
    frames = expand_requests(cfg, rng, 10, f_base=1000, geom=geom)
    stream = b"".join(frames)
    expected = ProtocolEmulator(cfg, 12_000_000, 3_000_000, frame_timeout=5000).feed(stream)
    got, taken, emitted = _run_soc(cfg, stream)
    assert without_timing_counters(ResponseParser().feed(got)) == without_timing_counters(ResponseParser().feed(expected))
    k = [i for i, f in enumerate(frames) if f[1] == Command.EXPAND][0]
    fields = EXPAND_ARGS.unpack(frames[k][5:-2])
    print("blocks", fields["blocks"], "count", fields["count"], "transposed", fields["flags"])
    last_in = taken[sum(len(f) for f in frames[:k + 1]) - 1]
    first_out = emitted[sum(len(r) for r in _split(expected)[:k])]
    assert first_out - last_in == 5 + expand_cycles(cfg, fields["count"], fields["blocks"])
