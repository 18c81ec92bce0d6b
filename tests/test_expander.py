"""The RTL EXPAND walker (``rtl/expander.py``) against its golden model ``sim.conv.expand_entries``: the A entries
it writes (values, addresses, order) and its cycles (``expand_cycles``), on a B memory holding a packed feature
map among garbage, for random geometries (strides, padding, 1x1/3x3 kernels), both orientations, several blocks,
an ``f_base`` near ``b_depth`` (B addresses wrap) and odd array shapes."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import memory
from amaranth.sim import Simulator

from fxtrain.rtl.expander import Expander
from fxtrain.sim.conv import (EXPAND_ARGS, ConvGeometry, conv_matrix, expand_args, expand_cycles, expand_entries,
                              fmap_pack)
from fxtrain.sim.gemm import EngineConfig

SEED = 1301


def random_case(cfg, rng, f_base=None):
    """A random geometry, map, B memory (map packed at ``f_base``, garbage elsewhere) and EXPAND payload."""
    kh, kw = (int(rng.choice([1, 3])), int(rng.choice([1, 3]))) if rng.random() < 0.7 else \
        (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    ph, pw = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    geom = ConvGeometry(int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(kh, 7)),
                        int(rng.integers(kw, 7)), kh, kw, sh, sw, ph, pw)
    lim = 1 << (cfg.wl - 1)
    x = rng.integers(-lim, lim, (geom.n, geom.c, geom.h, geom.w))
    b_mem = rng.integers(-lim, lim, (cfg.b_depth, cfg.cols))
    packed = fmap_pack(cfg, x)
    if f_base is None:
        f_base = int(rng.integers(0, cfg.b_depth))
    for i, row in enumerate(packed):
        b_mem[(f_base + i) % cfg.b_depth] = row
    transposed = bool(rng.integers(0, 2))
    v = conv_matrix(x, geom, transposed)
    mt = -(-v.shape[0] // cfg.rows)
    tm0 = int(rng.integers(0, mt))
    blocks = int(rng.integers(1, mt - tm0 + 1))
    k0 = int(rng.integers(0, v.shape[1]))
    count = int(rng.integers(1, v.shape[1] - k0 + 1))
    while blocks * count > cfg.depth:
        count = max(1, count // 2)
        blocks = max(1, blocks // 2)
    a_base = int(rng.integers(0, cfg.depth - blocks * count + 1))
    args = expand_args(cfg, geom, transposed=transposed, row0=tm0 * cfg.rows, k0=k0, count=count, blocks=blocks,
                       a_base=a_base, f_base=f_base)
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


@pytest.mark.parametrize("rows, cols, depth, b_depth, cases", [
    (4, 2, 64, 256, 10), (3, 5, 32, 128, 8), (1, 1, 32, 64, 6), (2, 8, 64, 64, 6), (7, 4, 32, 512, 4)])
def test_expander_writes_the_model_entries_in_expand_cycles(rows, cols, depth, b_depth, cases):
    """Every A write equals expand_entries' entry (value, address a_base + b*count + i, in order, one per rows
    cycles after the first), B is read in exactly V = blocks*count*rows cycles, and ``done`` marks the last write
    in cycle expand_cycles - 1 after start (EXPAND_LATENCY)."""
    seed = SEED + 1000 * rows + cols
    rng = np.random.default_rng(seed)
    print("seed", seed)
    cfg = EngineConfig(rows=rows, cols=cols, wl=8 if cols % 2 else 16, depth=depth, max_k_log2=12,
                       b_depth=b_depth, expander=True)
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
