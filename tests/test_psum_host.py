"""The host side of the partial-sum memory: the planner's chunk-outer schedule (``sim/planner.py``), the driver
(``host/device.py``, ``host/recovery.py``) and the time model's replay (``host/traffic.py``). Results equal
``tiled_gemm`` and the plain schedule bit for bit, every operand chunk crosses once per group, a resume restarts
the failed group exactly, and the replay counts what the driver sends."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fxtrain.host import timemodel
from fxtrain.host.device import Device
from fxtrain.host.transport import EmulatorTransport
from fxtrain.sim.conv import ConvGeometry, ConvView, conv_matrix
from fxtrain.sim.engine import EngineModel, gemm_via_engine, play_item
from fxtrain.sim.gemm import EngineConfig, tiled_gemm

from conftest import CorruptNthRequest, assert_equal_states, lenet_sgd_states
from fxtrain.sim.lfsr import lane_advance, lane_seeds
from fxtrain.sim.payloads import RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE
from fxtrain.sim.gemm_plan import plan_gemm
from fxtrain.sim.planner import CommandPlanner
from fxtrain.sim.schedule_items import Expand, ReadResult, Run, WriteOperand
from fxtrain.sim.protocol import Command, ProtocolEmulator

CFG = EngineConfig(rows=3, cols=2, wl=12, depth=16, b_depth=256, max_k_log2=12, psum_slots=4)


def _model(cfg, seed=3):
    model = EngineModel(cfg)
    model.set_seeds(lane_seeds(seed, cfg.lanes, cfg.lane_width))
    return model


def _golden(cfg, a, b, mode="stochastic", psum=True, view=None):
    return gemm_via_engine(_model(cfg), a, b, 7, mode, planner=CommandPlanner(cfg, psum=psum), a_view=view)


@pytest.mark.parametrize("seed", range(8))
def test_chunk_outer_schedule_equals_tiled_gemm_and_the_plain_schedule(seed):
    """Random K-split shapes and slot counts (1, fewer than a tile row, more than all tiles), B memories that hold
    every column or only some: the exact engine playing the chunk-outer schedule gives tiled_gemm's words,
    saturation flags and lane states, as the plain schedule does; extremes in trial 0."""
    rng = np.random.default_rng(seed)
    print("seed", seed)
    slots = int(rng.choice([1, 2, 3, 5, 64]))
    cfg = replace(CFG, psum_slots=slots, b_depth=int(rng.choice([16, 32, 256])))
    m, k, n = int(rng.integers(1, 12)), int(rng.integers(17, 70)), int(rng.integers(1, 12))
    lo, hi = (-2048, -2047) if seed == 0 else (-2048, 2048)
    a, b = rng.integers(lo, hi, (m, k)), rng.integers(lo, hi, (k, n))
    for mode in ("stochastic", "nearest"):
        want = tiled_gemm(cfg, a, b, 7, mode, lane_seeds(3, cfg.lanes, cfg.lane_width))
        for psum in (True, False):
            got = _golden(cfg, a, b, mode, psum)
            assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
            assert got.lane_state == want.lane_state


def test_schedule_shape_groups_flags_slots_and_once_per_group_operands():
    """Groups of psum_slots consecutive tiles; per group, per chunk, per tile one RUN with CLEAR or LOAD, DRAIN or
    SAVE on the tile's slot; READ_RESULT right after each draining run in the plain tile order; each B chunk of
    a group's columns crosses at most once per group, each A chunk of a group's tile rows once per group."""
    m, k, n = 3 * 3, 16 * 3 + 5, 2 * 5                  # 3 x 5 tiles, 4 chunks
    plan = plan_gemm(CFG, m, k, n)
    items = list(CommandPlanner(CFG).schedule(plan, (0, 0)))
    groups = plan.psum_groups(CFG.psum_slots, CFG.b_depth)
    assert groups == [(0, 4), (4, 4), (8, 4), (12, 3)]
    runs = [i for i in items if isinstance(i, Run)]
    assert len(runs) == len(plan.tiles) * len(plan.chunks)
    reads = [(i.tm, i.tn) for i in items if isinstance(i, ReadResult)]
    assert reads == plan.tiles
    pos = 0
    for first, count in groups:
        for c, chunk in enumerate(plan.chunks):
            for slot in range(count):
                run = runs[pos]
                pos += 1
                assert run.slot == slot and run.k == chunk.length
                assert run.flags == ((RUN_CLEAR if c == 0 else RUN_LOAD)
                                     | (RUN_DRAIN if c == len(plan.chunks) - 1 else RUN_SAVE))
    b_writes = sum(i.entries for i in items if isinstance(i, WriteOperand) and i.which == "B")
    a_writes = sum(i.entries for i in items if isinstance(i, WriteOperand) and i.which == "A")
    cols = sum(len({plan.tiles[t][1] for t in range(f, f + c)}) for f, c in groups)
    rows = sum(len({plan.tiles[t][0] for t in range(f, f + c)}) for f, c in groups)
    assert b_writes <= cols * k and a_writes == rows * k       # B may stay resident from the group before
    plain = list(CommandPlanner(CFG, psum=False).schedule(plan, (0, 0)))
    plain_b = sum(i.entries for i in plain if isinstance(i, WriteOperand) and i.which == "B")
    assert plain_b == len(plan.tiles) * k > b_writes


def test_b_memory_limits_the_group_to_the_columns_it_holds():
    """A B memory of 2 chunks with 5 tile columns: groups of at most 2 tiles (one chunk of every column of the
    group stays resident); with all columns fitting the group is psum_slots long."""
    plan = plan_gemm(CFG, 9, 40, 10)
    assert {c for _, c in plan.psum_groups(4, 32)} == {2, 1}
    assert plan.psum_groups(4, 16 * 5) == [(0, 4), (4, 4), (8, 4), (12, 3)]
    assert plan.psum_groups(64, 16) == [(t, 1) for t in range(15)]


@pytest.mark.parametrize("first_tile", [0, 1, 5, 6, 11])
def test_resume_restarts_the_failed_group_exactly(first_tile):
    """A resume after a failure (partial sums and accumulators garbage, residency forgotten, lanes where the
    golden model has them after ``first_tile`` drains) at ``first_tile`` plays the tiles from it on and they
    equal tiled_gemm's; no tile before it is drained again."""
    rng = np.random.default_rng(40 + first_tile)
    m, k, n = 9, 50, 8                                  # 3 x 4 tiles, 4 chunks, groups of 4
    a, b = rng.integers(-2048, 2048, (m, k)), rng.integers(-2048, 2048, (k, n))
    want = tiled_gemm(CFG, a, b, 5, "stochastic", lane_seeds(3, CFG.lanes, CFG.lane_width))
    plan = plan_gemm(CFG, m, k, n)
    model, planner = _model(CFG), CommandPlanner(CFG)
    ap, bp = plan.pad(a, b)
    # a first attempt that reads first_tile tiles, then the link fails somewhere in the group
    done = 0
    for item in planner.schedule(plan, (5, 1)):
        if isinstance(item, ReadResult) and done == first_tile:
            break
        play_item(model, plan, ap, bp, item, 5, "stochastic")
        done += isinstance(item, ReadResult)
    model.results.clear()
    model.psum[:] = rng.integers(-(1 << 30), 1 << 30, model.psum.shape)
    model.acc[:] = 12345
    model.lane_state = [lane_advance(s, first_tile * CFG.rows, CFG.lane_width)     # after the tiles read
                        for s in lane_seeds(3, CFG.lanes, CFG.lane_width)]
    planner.forget()
    c = np.zeros((plan.mp, plan.np_), dtype=np.int64)
    items = list(planner.schedule(plan, (5, 1), first_tile=first_tile))
    reads = [(i.tm, i.tn) for i in items if isinstance(i, ReadResult)]
    assert reads == plan.tiles[first_tile:]
    for item in items:
        for tile, (out, _) in play_item(model, plan, ap, bp, item, 5, "stochastic"):
            rs, cs = plan.tile_slices(*tile)
            c[rs, cs] = out
    for t in range(first_tile, len(plan.tiles)):
        rs, cs = plan.tile_slices(*plan.tiles[t])
        full = np.zeros((plan.mp, plan.np_), dtype=np.int64)
        full[:m, :n] = want.c
        assert np.array_equal(c[rs, cs], full[rs, cs])


def test_conv_mode_chunk_outer_equals_the_plain_gemm_and_expands_before_every_chunk():
    """Convolution mode (weight-gradient GEMM, K-split): the chunk-outer schedule with EXPANDs equals tiled_gemm
    of the materialized im2colᵀ, the map is looked up before every EXPAND, and B chunks cross once per group."""
    rng = np.random.default_rng(11)
    cfg = replace(CFG, expander=True, b_depth=512, psum_slots=8)
    geom = ConvGeometry(2, 5, 9, 9, 3, 3, 1, 1, 1, 1)
    x = rng.integers(-2048, 2048, (geom.n, geom.c, geom.h, geom.w))
    a = conv_matrix(x, geom, True)
    b = rng.integers(-2048, 2048, (a.shape[1], 7))
    assert a.shape[1] > cfg.depth
    view = ConvView(x, geom, True, "L", b"x")
    want = tiled_gemm(cfg, a, b, 7, "stochastic", lane_seeds(3, cfg.lanes, cfg.lane_width))
    got = _golden(cfg, a, b, view=view)
    assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
    items = list(CommandPlanner(cfg).schedule(plan_gemm(cfg, *a.shape, 7), (7, 1), a_view=view))
    assert any(isinstance(i, Expand) for i in items) and any(isinstance(i, Run) and i.load for i in items)


def _device(cfg, transport=EmulatorTransport, **kwargs):
    dev = Device(transport(ProtocolEmulator(cfg, rx_buffer=512), **kwargs), timeout=0.2)
    dev.seed(5)
    return dev




class _CorruptAnswer(EmulatorTransport):
    """Flips the CRC of the ``nth`` RUN answer (the RUN executed; the host cannot know: its group restarts)."""

    def __init__(self, emulator, cmd, nth):
        super().__init__(emulator)
        self.left, self.hit = nth, False

    def read(self, timeout):
        data = bytearray(super().read(timeout))
        at = 0
        while not self.hit and (at := data.find(bytes([0x5A, int(Command.RUN)]), at)) >= 0:
            if self.left == 0 and len(data) > at + 6:
                data[at + 6] ^= 0x40
                self.hit = True
            self.left -= 1
            at += 1
        return bytes(data)


@pytest.mark.parametrize("pipelined", [True, False])
@pytest.mark.parametrize("nth", [4, 9])
def test_a_run_answer_lost_after_it_ran_restarts_its_group_exactly(pipelined, nth):
    """A RUN (LOAD/SAVE) whose answer is corrupted may have run: the group's partial sums are unknown, so the
    driver restarts the group from CLEAR with its tiles not read yet; the result equals tiled_gemm bit for bit."""
    rng = np.random.default_rng(nth)
    cfg = replace(CFG, psum_slots=3)
    dev = _device(cfg, _CorruptAnswer, cmd=Command.RUN, nth=nth)
    dev.pipelined = pipelined
    a, b = rng.integers(-2048, 2048, (7, 40)), rng.integers(-2048, 2048, (40, 9))
    want = tiled_gemm(cfg, a, b, 6, "stochastic", lane_seeds(5, cfg.lanes, cfg.lane_width))
    got = dev.gemm(a, b, 6, "stochastic")
    assert dev.transport.hit and dev.counters["retries"] + dev.counters["rewinds"] >= 1
    assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)


@pytest.mark.parametrize("pipelined", [True, False])
@pytest.mark.parametrize("cmd,nth", [(None, 0), (Command.RUN, 7), (Command.WRITE_B, 3), (Command.READ_RESULT, 2)])
def test_device_chunk_outer_equals_the_exact_result_and_recovers_from_corrupted_frames(pipelined, cmd, nth):
    """The driver (pipelined, and the one-request-at-a-time path) sends RUNs with slots and LOAD/SAVE, and a
    corrupted RUN, WRITE_B or READ_RESULT frame is recovered: results equal tiled_gemm bit for bit, GEMM after
    GEMM (lanes carried), with fewer B bytes than the plain schedule."""
    rng = np.random.default_rng(77)
    cfg = replace(CFG, psum_slots=3)
    dev = (_device(cfg) if cmd is None else _device(cfg, CorruptNthRequest, cmd=cmd, nth=nth, where="payload"))
    dev.pipelined = pipelined
    state = lane_seeds(5, cfg.lanes, cfg.lane_width)
    for m, k, n in [(7, 40, 9), (1, 17, 1), (10, 33, 4)]:
        a, b = rng.integers(-2048, 2048, (m, k)), rng.integers(-2048, 2048, (k, n))
        want = tiled_gemm(cfg, a, b, 6, "stochastic", state)
        state = want.lane_state
        got = dev.gemm(a, b, 6, "stochastic")
        assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
    if cmd is not None:
        assert dev.transport.hit
    assert dev.transport.emulator.engine.counters["runs"] > 0


@pytest.mark.parametrize("slots,b_depth", [(1, 64), (3, 256), (64, 1024)])
def test_replay_equals_the_driver_with_partial_sums(slots, b_depth):
    """The replay's bytes both ways, frames and engine busy cycles (LOAD/SAVE terms from sim.engine.run_cycles)
    equal the driver's on a device with a partial-sum memory, plain and convolution-mode GEMMs mixed."""
    from tests.test_timemodel import _check_replay_against_device

    cfg = EngineConfig(rows=2, cols=3, wl=12, depth=16, max_k_log2=12, b_depth=b_depth, psum_slots=slots)
    device = Device(EmulatorTransport(ProtocolEmulator(cfg, rx_buffer=512)))
    device.seed(2)
    _check_replay_against_device(device, cfg, 5100 + slots)


def test_estimate_psum_what_if_is_named_and_cuts_the_bytes(capsys):
    """``fxtrain estimate --psum-slots N`` on a board without the memory says it is a what-if and sends fewer
    bytes per epoch than without it."""
    from fxtrain.host.cli import main

    args = ["estimate", "--board", "ulx3s-85f", "--format", "16.8", "--no-host", "--plot", "", "--expander"]
    assert main(args + ["--psum-slots", "0"]) == 0
    without = capsys.readouterr().out
    assert main(args + ["--psum-slots", "64"]) == 0
    with_ = capsys.readouterr().out
    assert "64 partial-sum slots" in with_
    board = timemodel.board_platform("ulx3s-85f", "16.8").config.psum_slots
    assert ("what-if: partial-sum slots" in with_) == (board != 64)
    assert ("what-if: partial-sum slots" in without) == (board != 0)

    def down(text):
        return int(text.split(" bytes to the device")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert down(with_) < down(without)


def test_lenet_training_steps_with_partial_sums_equal_the_exact_emulator():
    """An SGD step of LeNet (batch 4: the weight gradients are K-splits, K = 2304 and 256 > depth 128) on a
    Device over the ProtocolEmulator with the expander and 6 partial-sum slots give the same weights, bit for bit,
    as on the exact emulator; the device's slots were used."""
    from fxtrain.host.emulator import ExactEmulator

    cfg = EngineConfig(rows=4, cols=2, wl=16, depth=128, b_depth=16384, expander=True, psum_slots=6)
    device = Device(EmulatorTransport(ProtocolEmulator(cfg)))
    device.seed(11)
    got, want = lenet_sgd_states((device, ExactEmulator(replace(cfg, expander=False, psum_slots=0), seed=11)), steps=1)
    assert_equal_states(got, want)
    assert np.any(device.transport.emulator.engine.psum != 0) and device.counters["expands"] > 0


@pytest.mark.parametrize("slots", [0, 2])
def test_gemm_cycles_equal_the_engine_models_busy_counter(slots):
    """sim.engine.gemm_cycles counts the LOAD/SAVE terms of the chunk-outer schedule: it equals the busy counter
    of the engine model after gemm_via_engine, with and without slots."""
    from fxtrain.sim.engine import gemm_cycles

    cfg = replace(CFG, psum_slots=slots)
    rng = np.random.default_rng(slots)
    model = _model(cfg)
    gemm_via_engine(model, rng.integers(-50, 50, (7, 37)), rng.integers(-50, 50, (37, 5)), 3, "nearest")
    assert model.counters["busy"] == gemm_cycles(cfg, 7, 37, 5)


@pytest.mark.cocotb
@pytest.mark.slow
def test_driver_and_replay_on_the_verilator_soc_with_partial_sums(build_root):
    """Through the SoC's Verilog in Verilator with 3 partial-sum slots (``sim:verilator``): random GEMMs with
    K-splits go chunk-outer with LOAD/SAVE RUNs, results equal tiled_gemm bit for bit, and the replay's bytes,
    frames and busy cycles (the RTL's LOAD/SAVE cycles) equal the driver's and the RTL's counters."""
    from fxtrain.host.device_spec import open_device
    from fxtrain.host.transport import SIM_CONFIG
    from fxtrain.sim.runner import simulator_available
    from tests.test_timemodel import _check_replay_against_device

    ok, why = simulator_available("verilator")
    if not ok:
        pytest.skip(f"verilator unavailable: {why}")
    cfg = replace(SIM_CONFIG, psum_slots=3)
    device = open_device("sim:verilator", config=cfg, build_root=build_root)
    try:
        assert device.config.psum_slots == 3
        device.seed(4)
        rng = np.random.default_rng(4)
        a, b = rng.integers(-(1 << 15), 1 << 15, (5, 70)), rng.integers(-(1 << 15), 1 << 15, (70, 7))
        want = tiled_gemm(cfg, a, b, 9, "stochastic", lane_seeds(4, cfg.lanes, cfg.lane_width))
        got = device.gemm(a, b, 9, "stochastic")
        assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
        _check_replay_against_device(device, cfg, 7124)
    finally:
        device.close()
