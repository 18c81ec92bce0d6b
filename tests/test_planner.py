"""The one GEMM planner (``sim/planner.py``) and the payload layouts (``sim/payloads.py``): the schedule covers
every output tile once with correct flags and residency, the driver sends exactly that schedule, a failed command
makes the driver forget residency (tests/test_device.py), and every payload layout means the same bits to the host and the RTL."""

import random

import numpy as np
import pytest

from fxtrain.host.device import Device
from fxtrain.host.transport import EmulatorTransport
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.payloads import RUN_ARGS, RUN_TILES_ARGS, WRITE_HEADER, FieldLayout, run_tiles_args, write_frames
from fxtrain.sim.gemm_plan import plan_gemm
from fxtrain.sim.planner import CommandPlanner
from fxtrain.sim.schedule_items import ReadResult, Reused, Run, RunTiles, SetRounding, WriteOperand
from fxtrain.sim.protocol import ProtocolEmulator
from fxtrain.sim.wire import MAX_LENGTH


def _walk(planner, plan, rounding, mems, b_key=None):
    """Play a schedule on address -> (block, k) maps ``mems`` (the device's memories, kept across calls):
    returns the operands each drained tile accumulated and the tiles read, in order."""
    a_mem, b_mem = mems
    runs, reads, acc = [], [], []
    for item in planner.schedule(plan, rounding, b_key=b_key):
        if isinstance(item, WriteOperand):
            mem = a_mem if item.which == "A" else b_mem
            k = item.chunk.length
            for i in range(item.entries):
                mem[item.addr + i] = (item.index + i // k, item.chunk.k0 + i % k)
        elif isinstance(item, Run):
            if item.clear:
                acc = []
            acc += [(a_mem[item.a_base + i], b_mem[item.b_base + i]) for i in range(item.k)]
            if item.drain:
                runs.append(acc)
        elif isinstance(item, ReadResult):
            reads.append((item.tm, item.tn))
        elif isinstance(item, RunTiles):
            for t, tile in enumerate(item.group.tiles):
                b_base = item.b_base + t * item.b_step
                runs.append([(a_mem[item.a_base + i], b_mem[b_base + i]) for i in range(item.k)])
                reads.append(tile)
    return runs, reads


@pytest.mark.parametrize("tile_loop", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 3, 7), (9, 70, 3), (4, 129, 8), (13, 200, 5), (3, 7, 21),
                                   (5, 32, 5)])
def test_schedule_accumulates_exactly_each_tiles_k_range(shape, tile_loop):
    """Every tile's drained accumulation reads A row block tm and B column block tn at k = 0..K-1, exactly once
    each, whatever residency reused; tiles are read tm outer, tn inner (RUN_TILES groups included: B of a group
    split over several groups when it does not fit, K = depth, K = 1)."""
    cfg = EngineConfig(rows=4, cols=2, wl=16, depth=32)
    m, k, n = shape
    plan = plan_gemm(cfg, m, k, n, tile_loop=tile_loop)
    assert (plan.groups is not None) == (tile_loop and k <= cfg.depth)
    planner = CommandPlanner(cfg)
    mems = ({}, {})
    for _ in range(2):                  # a second call with the same b_key reuses B
        runs, reads = _walk(planner, plan, (3, 0), mems, b_key="W")
        assert reads == [(tm, tn) for tm in range(plan.mt) for tn in range(plan.nt)]
        for (tm, tn), pairs in zip(reads, runs):
            assert pairs == [((tm, kk), (tn, kk)) for kk in range(k)]


def test_residency_sends_each_operand_once_when_it_fits():
    """With K <= depth, A crosses once per tile row and B once per call (and not at all with a resident b_key)."""
    cfg = EngineConfig(rows=2, cols=2, wl=16, depth=128)     # all 5 B chunks of 20 entries fit
    plan = plan_gemm(cfg, 6, 20, 10)
    planner = CommandPlanner(cfg)

    def sent(items, which):
        return sum(i.entries for i in items if isinstance(i, WriteOperand) and i.which == which)

    first = list(planner.schedule(plan, (0, 0), b_key="W"))
    assert sent(first, "A") == 3 * 20 and sent(first, "B") == 5 * 20
    assert sum(isinstance(i, SetRounding) for i in first) == 1
    second = list(planner.schedule(plan, (0, 0), b_key="W"))
    assert sent(second, "B") == 0 and sum(i.entries for i in second if isinstance(i, Reused) and i.which == "B")
    assert not any(isinstance(i, SetRounding) for i in second)
    planner.forget()
    third = list(planner.schedule(plan, (0, 0), b_key="W"))
    assert sent(third, "B") == 5 * 20 and sum(isinstance(i, SetRounding) for i in third) == 1


def test_device_sends_the_planners_schedule():
    """The driver's frame and entry counters equal the planner's schedule for random shapes (seed printed)."""
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    cfg = EngineConfig(rows=2, cols=3, wl=12, depth=16)
    dev = Device(EmulatorTransport(ProtocolEmulator(cfg)))
    shadow = CommandPlanner(cfg)
    for _ in range(6):
        m, k, n = rng.randint(1, 7), rng.randint(1, 40), rng.randint(1, 7)
        before = dict(dev.counters)
        items = list(shadow.schedule(plan_gemm(cfg, m, k, n), (2, 1), b_key=None))
        dev.gemm(np.ones((m, k), dtype=np.int64), np.ones((k, n), dtype=np.int64), 2, "stochastic")
        frames = sum(len(write_frames(cfg, i.which, i.entries)) for i in items if isinstance(i, WriteOperand))
        frames += sum(not isinstance(i, (WriteOperand, Reused)) for i in items)
        assert dev.counters["frames"] - before["frames"] == frames
        runs = sum(isinstance(i, Run) for i in items) + sum(i.n_tiles for i in items if isinstance(i, RunTiles))
        assert dev.counters["runs"] - before["runs"] == runs


def test_payload_layouts_mean_the_same_bits_to_host_and_rtl():
    """``FieldLayout.pack`` and its Amaranth ``StructLayout`` put every field in the same bits, and bad values
    are refused naming the field."""
    from amaranth.hdl import Const
    from amaranth.lib import data

    assert RUN_ARGS.size == 11 and WRITE_HEADER.size == 4
    values = (0x77, 0x1234, 0x0BCD, 0xDEADBEEF, 3)
    raw = int.from_bytes(RUN_ARGS.pack(*values), "little")
    view = data.Const(RUN_ARGS.as_struct(), raw)
    assert tuple(int(view[f]) for f, _ in RUN_ARGS.fields) == values
    assert RUN_ARGS.unpack(RUN_ARGS.pack(*values)) == dict(zip(["slot", "a_base", "b_base", "k", "flags"], values))
    assert RUN_ARGS.offset("k") == 6
    with pytest.raises(ValueError, match="field flags"):
        RUN_ARGS.pack(0, 0, 0, 1, 256)
    with pytest.raises(ValueError, match="1, 2 or 4 bytes"):
        FieldLayout("bad", [("x", 3)])
    assert Const  # imported for the StructLayout check above
    # RUN_TILES' bytes are RUN's fields (the RTL reads both through one view): B_STEP in SLOT, K | N_TILES << 16
    # in K
    tiles = RUN_TILES_ARGS.pack(7, 0x0123, 0x0456, 33, 5, 3)
    assert RUN_ARGS.unpack(tiles[-RUN_ARGS.size:]) == dict(slot=7, a_base=0x0123, b_base=0x0456, k=33 | 5 << 16,
                                                           flags=3)
    assert run_tiles_args(0x0123, 0x0456, 7, 33, 5) == tiles


def test_write_frames_cut_blocks_at_the_frame_maximum():
    """A block of entries is cut into frames of at most MAX_LENGTH payload bytes, covering it once in order."""
    cfg = EngineConfig(rows=32, cols=1, wl=16, depth=4096)
    frames = write_frames(cfg, "A", 4096)
    per = (MAX_LENGTH - WRITE_HEADER.size) // 64
    assert frames[0] == (0, per) and sum(c for _, c in frames) == 4096
    assert all(s == i * per for i, (s, _) in enumerate(frames))


def test_write_frames_fit_the_receive_buffer_and_identity_reports_it():
    """With a receive buffer every WRITE frame (header, payload, CRC) fits it; IDENTIFY byte 11 carries its log2
    and 0 means none; a size that is not a power of two is refused naming it."""
    from fxtrain.sim.payloads import Identity, max_payload
    from fxtrain.sim.wire import request_frame_bytes

    cfg = EngineConfig(rows=4, cols=2, wl=16, depth=512)
    for rx in (64, 2048):
        for which in ("A", "B"):
            frames = write_frames(cfg, which, 512, rx)
            assert sum(c for _, c in frames) == 512
            assert all(request_frame_bytes(WRITE_HEADER.size + c * 2 * (4 if which == "A" else 2)) <= rx
                       for _, c in frames)
    assert max_payload(0) == MAX_LENGTH and max_payload(2048) == 2041
    ident = Identity.from_parameters(cfg, 12_000_000, 3_000_000, rx_buffer=2048)
    assert ident.to_bytes()[11] == 11 and Identity.from_bytes(ident.to_bytes()).rx_buffer == 2048
    assert Identity.from_parameters(cfg, 12_000_000, 3_000_000, rx_buffer=0).rx_buffer == 0
    with pytest.raises(ValueError, match="not 1000"):
        Identity.from_parameters(cfg, 12_000_000, 3_000_000, rx_buffer=1000)
    with pytest.raises(ValueError, match="cannot hold a WRITE_A frame"):
        write_frames(EngineConfig(rows=32, cols=1, wl=16, depth=64), "A", 4, 64)
