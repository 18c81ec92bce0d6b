"""The time model (``host/timemodel.py``, ``docs/time-model.md``) predicts exactly what the driver, the protocol
emulator and the RTL count: GEMM shapes of a LeNet step, bytes on the wire, exchanges and engine cycles; and
``fxtrain estimate`` rejects impossible inputs with messages naming the value."""

import copy
import random
from collections import Counter

import numpy as np
import pytest

from fxtrain.host import timemodel
from fxtrain.host.cli import main
from fxtrain.host.device_spec import open_device
from fxtrain.host.emulator import FastEmulator
from fxtrain.sim.benches.engine_bench import busy_cycles_in_amaranth_sim, schedule_runs
from fxtrain.sim.gemm import EngineConfig


def _device_totals(device):
    c = device.counters
    return c["bytes_sent"], c["bytes_received"], c["frames"]


@pytest.mark.slow
@pytest.mark.parametrize("input_grad", ["patches", "convolution"])
def test_training_gemms_equal_the_calls_of_the_fixed_layers(input_grad):
    """training_gemms lists exactly the (M, K, N, weights-or-not) of every backend call of one LeNet step, in
    order: forward im2col·Wᵀ, then per layer backwards the input gradient (not for conv1: dY·W, or for conv2 with
    input_grad="convolution" im2col(dY)·flip(W)) and im2colᵀ·dY."""
    backend = timemodel.TimedBackend(FastEmulator(EngineConfig(rows=4, cols=4, wl=16, depth=64)))
    timemodel.time_training_steps(backend, batch=2, steps=1, warmup=0, input_grad=input_grad)
    recorded = [(m, k, n, key is not None) for m, k, n, _, _, key in backend.calls]
    predicted = [(g.m, g.k, g.n, g.b_weights)
                 for g in timemodel.training_gemms(timemodel.lenet_layers(), 2, input_grad=input_grad)]
    assert recorded == predicted
    if input_grad == "convolution":
        assert (2 * 12 * 12, 16 * 25, 6, True) in recorded          # conv2's dX: 2 x 12 x 12 rows, 6 columns


def _check_replay_against_device(device, config, seed):
    """Random GEMMs (K = 1, K = depth, K-splits, keyed B reused and thrashed, rounding changes) through
    ``device``: the replayed traffic equals its bytes both ways, frames and the engine's busy-cycle counter."""
    rows, cols, depth = config.rows, config.cols, config.depth
    rng = random.Random(seed)
    data = np.random.default_rng(seed)
    replay = timemodel.DriverReplay(config)
    busy_start = device.device_counters()["busy"]
    start = _device_totals(device)      # READ_COUNTERS itself is not part of the GEMMs
    traffic = timemodel.Traffic()
    keys = {}
    shapes = [(1, 1, 1), (rows, depth, cols), (2 * rows + 1, 3 * depth + 1, 2 * cols + 1)]
    shapes += [(rng.randint(1, 9), rng.randint(1, 3 * depth), rng.randint(1, 9)) for _ in range(6)]
    for i, (m, k, n) in enumerate(shapes):
        key = rng.choice([None, "w1", "w2"])
        if key is not None:
            m = rng.randint(1, 9)
            k, n = keys.setdefault(key, (k, n))
            b = np.random.default_rng(hash(key) % 1000).integers(-50, 50, (k, n))
        else:
            b = data.integers(-50, 50, (k, n))
        shift = rng.choice([0, 3])
        mode = rng.choice(["nearest", "stochastic"])
        device.gemm(data.integers(-50, 50, (m, k)), b, shift, mode, b_key=key)
        traffic += replay.gemm(m, k, n, (shift, mode), key)
    sent, received, frames = (x - y for x, y in zip(_device_totals(device), start))
    assert traffic.bytes(config) == (sent, received)
    assert traffic.exchanges(config) == frames
    assert traffic.engine_cycles(config) == device.device_counters()["busy"] - busy_start


@pytest.mark.parametrize("rows,cols,depth,b_depth", [(1, 1, 2, None), (2, 3, 16, None), (4, 2, 8, None),
                                                     (2, 3, 16, 64), (4, 2, 8, 1024)])
def test_replay_bytes_exchanges_and_cycles_equal_the_driver_on_the_protocol_emulator(rows, cols, depth, b_depth):
    """The replay equals the driver's counts on the protocol emulator (``_check_replay_against_device``), also
    with a B memory deeper than A's, where more keyed B stays resident."""
    seed = 7000 + 100 * rows + 10 * cols + depth + (b_depth or 0)
    print(f"seed={seed}")
    wl = 8 if rows == 4 else 12
    config = EngineConfig(rows=rows, cols=cols, wl=wl, depth=depth, max_k_log2=12, b_depth=b_depth)
    device = open_device("emu", config=config)
    _check_replay_against_device(device, config, seed)


@pytest.mark.parametrize("rows,cols,depth,b_depth,psum_slots", [(2, 3, 16, 1024, 0), (4, 2, 8, 256, 0),
                                                                (3, 4, 32, 512, 0), (2, 3, 16, 1024, 5),
                                                                (4, 2, 8, 256, 64)])
def test_replay_equals_the_driver_in_convolution_mode(rows, cols, depth, b_depth, psum_slots):
    """Convolution mode (device with the expander): for convolutions' forward and weight-gradient GEMMs (maps
    written, reused by key, evicted and re-sent; EXPANDs in the tile loop and the K-split; a map too big: map
    windows in the tile loop, the plain fallback in a K-split) interleaved with plain keyed GEMMs, the replay with
    data-less views equals the driver's bytes both ways, frames and the engine's busy cycles, and counts the
    driver's EXPANDs and map entries; with a partial-sum memory too (K-splits chunk-outer with LOAD/SAVE runs)."""
    from fxtrain.sim.conv import ConvGeometry, ConvView, conv_matrix, fmap_entries

    seed = 9000 + rows + depth + b_depth
    print(f"seed={seed}")
    config = EngineConfig(rows=rows, cols=cols, wl=12, depth=depth, max_k_log2=14, b_depth=b_depth, expander=True,
                          psum_slots=psum_slots)
    device = open_device("emu", config=config)
    device.seed(1)
    replay = timemodel.DriverReplay(config)
    rng = np.random.default_rng(seed)
    busy_start = device.device_counters()["busy"]
    start = _device_totals(device)
    traffic = timemodel.Traffic()
    geoms = [ConvGeometry(2, 3, 9, 9, 3, 3, 1, 1, 1, 1), ConvGeometry(3, 5, 8, 7, 1, 1, 2, 2, 0, 0),
             ConvGeometry(1, 2, 12, 12, 5, 5), ConvGeometry(4, 6, 12, 12, 3, 3, 2, 2, 1, 1)]
    assert fmap_entries(config, geoms[-1]) > b_depth // 2           # falls back on the smaller B memories
    for step in range(2):
        for i, geom in enumerate(geoms + geoms[:2]):
            x = rng.integers(-50, 50, (geom.n, geom.c, geom.h, geom.w))
            n = int(rng.integers(1, 9))
            for transposed in (False, True):
                a = conv_matrix(x, geom, transposed)
                b = rng.integers(-50, 50, (a.shape[1], n))
                key = ("L", i % len(geoms), step)
                device.gemm(a, b, 3, "stochastic", a_view=ConvView(x, geom, transposed, key))
                traffic += replay.gemm(*a.shape, n, (3, "stochastic"), None,
                                       ConvView(None, geom, transposed, key, b""))
            w = np.random.default_rng(i).integers(-50, 50, (20, 7))
            device.gemm(rng.integers(-50, 50, (5, 20)), w, 0, "nearest", b_key=("w", i))
            traffic += replay.gemm(5, 20, 7, (0, "nearest"), ("w", i))
    sent, received, frames = (x - y for x, y in zip(_device_totals(device), start))
    assert traffic.bytes(config) == (sent, received)
    assert traffic.exchanges(config) == frames
    assert traffic.engine_cycles(config) == device.device_counters()["busy"] - busy_start
    assert sum(traffic.expands.values()) == device.counters["expands"] > 0
    assert sum(e * c for e, c in traffic.map_writes.items()) == device.counters["map_entries_sent"] > 0
    if depth >= 16:                                                  # one EXPAND fills several tile rows
        assert sum(c * bl for (_, bl), c in traffic.expands.items()) > sum(traffic.expands.values())
    if b_depth > 256:            # on 256 B entries every forward map goes in windows, replayed row by row
        assert replay.skipped_rows > 0
    assert bool(traffic.psum_runs) == bool(psum_slots)


@pytest.mark.parametrize("board,batch,psum_slots", [("icebreaker", 16, None), ("icebreaker", 7, None),
                                                    ("ulx3s-85f", 16, None), ("icebreaker", 16, 64)])
def test_fast_replay_equals_the_full_replay_in_convolution_mode(board, batch, psum_slots):
    """A LeNet step with the expander (EXPANDs filling several tile rows ahead): the fast replay skips rows and
    counts exactly what the full replay counts, including the last EXPAND, which fills only the rows left; with
    partial-sum slots the chunk-outer K-splits are replayed in full, the rest still skips."""
    config = timemodel.board_platform(board, "16.8", expander=True, psum_slots=psum_slots).config
    gemms = timemodel.training_gemms(timemodel.lenet_layers(), batch)
    fast, full = timemodel.DriverReplay(config), timemodel.DriverReplay(config, fast=False)
    for replay in (fast, full):
        replay.step(gemms, step_id=0)
    got, want = fast.step(gemms, step_id=1), full.step(gemms, step_id=1)
    assert got == want and sum(got.expands.values()) > 0 and fast.skipped_rows > 0


def test_replay_equals_the_driver_on_the_verilator_soc(build_root):
    """The same through the SoC's Verilog in Verilator (``sim:verilator``, the simulation transports' engine:
    2 x 2, depth 32, B memory of 1024 entries): bytes, frames and the RTL's busy counter."""
    from fxtrain.host.transport import SIM_CONFIG
    from fxtrain.sim.runner import simulator_available

    ok, why = simulator_available("verilator")
    if not ok:
        pytest.skip(f"verilator unavailable: {why}")
    seed = 7123
    print(f"seed={seed}")
    device = open_device("sim:verilator", config=SIM_CONFIG, build_root=build_root)
    try:
        _check_replay_against_device(device, SIM_CONFIG, seed)
    finally:
        device.close()


@pytest.mark.slow
def test_step_traffic_equals_a_lenet_training_step_through_the_driver():
    """The steady-state traffic of one LeNet training step (batch 1, an 8x8 engine of depth 128, where conv2's
    weights do not fit in B memory and K-splits happen) equals the bytes and frames the driver sends in the
    second step."""
    config = EngineConfig(rows=8, cols=8, wl=16, depth=128)
    device = open_device("emu", config=config)
    timemodel.time_training_steps(device, batch=1, steps=0, warmup=1)
    before = _device_totals(device)
    timemodel.time_training_steps(device, batch=1, steps=1, warmup=0)
    sent, received, frames = (x - y for x, y in zip(_device_totals(device), before))
    traffic = timemodel.step_traffic(config, timemodel.lenet_layers(), 1, rounding=device_rounding())
    assert traffic.bytes(config) == (sent, received)
    assert traffic.exchanges(config) == frames


def device_rounding():
    """(shift, mode) per GEMM kind of the default formats of fxtrain.host.layers."""
    from fxtrain.host.layers import FixedConfig

    fixed = FixedConfig(wl=EngineConfig().wl)
    return {"forward": (fixed.shifts["forward"], fixed.rounding),
            "input_grad": (fixed.shifts["grad_input"], fixed.rounding),
            "weight_grad": (fixed.shifts["grad_weight"], fixed.rounding)}


@pytest.mark.parametrize("psum_slots", [0, 2])
def test_rtl_engine_busy_counter_equals_predicted_cycles(psum_slots):
    """The GemmEngine RTL (Amaranth simulator) counts, in its busy counter, exactly the time model's predicted
    cycles (``Traffic.engine_cycles``) of the runs the planner issues, played in its order: a K-split GEMM
    (K = 2*depth + 3) and a K = 1 GEMM (a RUN_TILES). With a partial-sum memory the K-split goes chunk-outer over
    two slots, so its CLEAR+SAVE, LOAD+SAVE and LOAD+DRAIN runs check the model's LOAD/SAVE cycle terms
    (``sim.engine.load_cycles``/``save_cycles`` in ``run_cycles``) against the RTL."""
    config = EngineConfig(rows=2, cols=3, wl=8, depth=8, max_k_log2=8, b_depth=32, psum_slots=psum_slots)
    replay = timemodel.DriverReplay(config)
    shapes = [(5, 2 * config.depth + 3, 4), (1, 1, 1)]
    traffic = replay.gemm(*shapes[0])
    traffic += replay.gemm(*shapes[1])
    runs = [run for shape in shapes for run in schedule_runs(config, *shape)]
    psum_runs = Counter((r.k, r.drain, r.load, r.save) for r in runs if r.load or r.save)
    assert traffic.run_tiles and psum_runs == traffic.psum_runs
    if psum_slots:
        assert {key[1:] for key in psum_runs} == {(False, False, True), (False, True, True), (True, True, False)}
        assert {r.slot for r in runs if r.save} == {0, 1}
    else:
        assert not psum_runs
    assert busy_cycles_in_amaranth_sim(config, runs) == traffic.engine_cycles(config)


@pytest.mark.slow
def test_word_length_sets_bytes_per_word_and_fraction_length_changes_nothing():
    """WL 8 sends 1 byte per word, WL 9..16 two; FL never changes a predicted number."""
    layers = timemodel.lenet_layers()
    est = {}
    for fmt in ("8.4", "8.7", "9.4", "16.8", "16.14"):
        platform = timemodel.board_platform("icebreaker", fmt)
        est[fmt] = timemodel.estimate_epoch(platform, layers, fmt, 16, 100)
    assert est["8.4"].total_s == est["8.7"].total_s
    assert est["9.4"].total_s == est["16.8"].total_s == est["16.14"].total_s
    assert est["8.4"].bytes_down < est["9.4"].bytes_down
    assert est["8.4"].engine_cycles == est["16.8"].engine_cycles


def test_epoch_is_full_steps_plus_the_partial_batch():
    """An epoch of 100 samples in batches of 16 is 6 steps of 16 and one of 4."""
    layers = timemodel.lenet_layers()
    platform = timemodel.board_platform("ulx3s-85f", "16.8")
    host = timemodel.HostModel(0.01, 0.001)
    epoch = timemodel.estimate_epoch(platform, layers, "16.8", 16, 100, host)
    full = timemodel.estimate_step(platform, layers, 16, host)
    part = timemodel.estimate_step(platform, layers, 4, host)
    assert (epoch.steps, epoch.remainder) == (6, 4)
    assert epoch.total_s == pytest.approx(6 * full.total_s + part.total_s)
    assert epoch.bytes_down == 6 * full.bytes_down + part.bytes_down


def test_host_model_fit_recovers_a_line_and_needs_two_batch_sizes():
    fit = timemodel.HostModel.fit([(8, 0.05 + 8 * 0.002), (32, 0.05 + 32 * 0.002), (8, 0.05 + 8 * 0.002)])
    assert fit.fixed_s == pytest.approx(0.05) and fit.per_sample_s == pytest.approx(0.002)
    with pytest.raises(ValueError, match="two distinct batch sizes"):
        timemodel.HostModel.fit([(8, 1.0), (8, 1.1)])


@pytest.mark.parametrize("args,message", [
    (["--board", "nosuchboard"], "Unknown board 'nosuchboard'"),
    (["--format", "17.8"], "Word length must be at most 16"),
    (["--format", "16"], "'16' is not of the form"),
    (["--format", "12.4", "--packed"], "need WL <= 8 on ice40 (board icebreaker), not 12"),
    (["--batch", "0"], "Batch size must be a positive integer, not 0"),
    (["--train-size", "-5"], "Training set size must be a positive integer, not -5"),
    (["--model", "resnet"], "Unknown model 'resnet'"),
    (["--exchange-ms", "-1"], "must be non-negative, not -1"),
    (["--psum-slots", "-1"], "psum_slots must be an integer from 0 to 65535, not -1"),
])
def test_estimate_cli_rejects_bad_inputs_naming_the_value(args, message, capsys):
    assert main(["estimate", "--no-host", "--plot", ""] + args) == 2
    assert message in capsys.readouterr().err


def test_board_above_its_multiplier_width_is_refused(monkeypatch):
    """A board whose multipliers are narrower than the format's WL is refused, naming both."""
    monkeypatch.setitem(timemodel.MULTIPLIER_WIDTH, "ice40", 12)
    with pytest.raises(ValueError, match="WL 14, above the 12-bit multipliers of board icebreaker"):
        timemodel.board_platform("icebreaker", "14.7")


def test_estimate_cli_prints_breakdown_table_and_writes_plot(tmp_path, capsys):
    plot = tmp_path / "t.png"
    assert main(["estimate", "--board", "ulx3s-85f", "--format", "12.6", "--batch", "32", "--train-size", "256",
                 "--host-ms", "5", "0.5", "--plot", str(plot), "--plot-boards", "ulx3s-85f,ulx3s-45f"]) == 0
    out = capsys.readouterr().out
    for text in ("compute (engine busy)", "link down (bytes to the device)", "per-GEMM latency", "host",
                     "| 8 | 1 |", "| 16 | 2 |"):
        assert text in out
    assert plot.stat().st_size > 1000


def test_estimate_expander_what_if_is_named_and_cuts_the_bytes(capsys):
    """``--expander`` on a board built without it is a what-if named in the output (convolution mode, the
    EXPAND term); it cuts the bytes to the device, and ``--no-expander`` is the board's plain figure. Board
    defaults come from the board target's EngineConfig.expander."""
    from fxtrain.boards.targets import get_target

    args = ["estimate", "--board", "icebreaker", "--batch", "16", "--train-size", "64", "--no-host", "--plot", ""]
    assert main(args + ["--expander"]) == 0
    on = capsys.readouterr().out
    assert main(args + ["--no-expander"]) == 0
    off = capsys.readouterr().out
    assert "convolution mode (expander)" in on and "EXPAND (A from the maps)" in on and "no expander" in off
    builds_it = get_target("icebreaker").config.expander
    assert ("what-if: expander on" in on) != builds_it and ("what-if: expander off" in off) == builds_it
    bytes_down = [int(out.split(" bytes to the device")[0].rsplit(" ", 1)[1].replace(",", "")) for out in (on, off)]
    assert bytes_down[0] < 0.6 * bytes_down[1]
    platform = timemodel.board_platform("icebreaker", "16.8", expander=True)
    estimate = timemodel.estimate_epoch(platform, timemodel.lenet_layers(), "16.8", 64, 640)
    assert estimate.expand_cycles > 0 and estimate.full.device_s >= estimate.full.up_s + estimate.full.compute_s \
        + estimate.full.expand_s


def test_pipelined_estimate_overlaps_the_wire_and_waits_once_per_gemm():
    """With a receive buffer the driver waits once per GEMM and the device's work overlaps the down wire:
    T = max(down, up + compute + request bytes / f) + gemms * latency + host; without one (rx_buffer=0) every
    exchange waits and nothing overlaps, which with the per-tile schedule of protocol version 1 (tile_loop off)
    and a B memory as deep as A's (512) reproduces the issue's 'before' figures for the iCEBreaker; the board's
    32K-entry B memory (SPRAM) keeps the weights resident and sends fewer bytes and frames."""
    from dataclasses import replace

    # the GEMMs of the issue's time: conv2's input gradient as the patch GEMM dY . W (no convolution geometry)
    layers = [replace(layer, conv=None) for layer in timemodel.lenet_layers()]
    piped = timemodel.board_platform("icebreaker", "16.8")
    assert (piped.config.depth, piped.config.b_depth) == (512, 32768)
    seq = replace(piped, rx_buffer=0, tile_loop=False)
    p = timemodel.estimate_epoch(piped, layers, "16.8", 64, 60000)
    s = timemodel.estimate_epoch(replace(seq, config=replace(seq.config, b_depth=512)), layers, "16.8", 64, 60000)
    # (RUN's arguments grew from 9 to 11 bytes with the partial-sum SLOT: 2 bytes x 119,234,790 RUNs more than the
    # issue's figure, 42,644,961,538)
    assert (s.bytes_down, s.bytes_up, s.exchanges) == (42_883_431_118, 5_053_671_856, 342_103_632)
    deep = timemodel.estimate_epoch(seq, layers, "16.8", 64, 60000)
    assert (deep.bytes_down, deep.bytes_up, deep.exchanges) == (24_669_835_296, 4_329_085_792, 251_530_374)
    assert s.waits == s.exchanges and s.total_s == pytest.approx(s.compute_s + s.link_s + s.exchange_s)
    assert p.waits == 938 * 14
    assert p.exchange_s == pytest.approx(p.waits * piped.link.exchange_s)
    assert p.device_s == pytest.approx(max(p.down_s, p.up_s + p.compute_s + p.process_s))
    assert p.total_s < s.total_s / 3 and p.exchange_s < 0.05 * p.total_s


def test_link_timing_uses_the_board_uart_clock():
    """The up-link byte time is 10 * divisor / f_uart with the divisor of the board's UART clock (not the engine
    clock), and the down-link 10 / baud: 4.8 Mbaud from 19.125 MHz (divisor 4, sending 0.4 % slow) on the
    iCEBreaker, 3 Mbaud from 30 MHz (divisor 10) on the ULX3S."""
    from fxtrain.boards.targets import get_target
    for name, baud, divisor in (("icebreaker", 4_800_000, 4), ("ulx3s-85f", 3_000_000, 10)):
        target = get_target(name)
        assert (target.baud, target.uart_divisor) == (baud, divisor)
        link = timemodel.board_platform(name, "16.8").link
        assert link.down_byte_s == pytest.approx(10 / baud)
        assert link.up_byte_s == pytest.approx(10 * divisor / target.uart_freq)
        # the ULX3S's 30 MHz makes 3 Mbaud exactly; the iCEBreaker's 19.125 MHz / 4 sends at 4.78 Mbaud, 0.4 % slow
        assert link.up_byte_s == pytest.approx(10 / baud, rel=0.005 if name == "icebreaker" else 1e-9)


def _replay_pair(config, tile_loop=True):
    return (timemodel.DriverReplay(config, tile_loop=tile_loop),
            timemodel.DriverReplay(config, tile_loop=tile_loop, fast=False))


@pytest.mark.parametrize("tile_loop", [True, False])
@pytest.mark.parametrize("rows,cols,depth", [(1, 1, 2), (4, 2, 16), (3, 5, 32), (12, 12, 64)])
def test_fast_replay_counts_exactly_what_the_full_replay_counts(rows, cols, depth, tile_loop):
    """The fast path (periodic tile rows skipped) gives the same Traffic as replaying every tile, GEMM by GEMM in
    one sequence (so the residency it leaves behind is equivalent too): K = 1, K = depth, K-splits (K > depth),
    B that does not fit (K * Np > depth, thrashed every tile row), B that fits, keyed B reused across calls and
    changed shape, rounding changes; with RUN_TILES groups and with per-tile RUN / READ_RESULT; and it does skip
    rows."""
    seed = 14000 + 100 * rows + 10 * cols + depth + tile_loop
    print(f"seed={seed}")
    rng = random.Random(seed)
    config = EngineConfig(rows=rows, cols=cols, wl=16, depth=depth, max_k_log2=12)
    fast, full = _replay_pair(config, tile_loop)
    shapes = [(200 * rows + 3, 1, 1), (150 * rows, depth, cols), (97 * rows + 1, 3 * depth + 1, 2 * cols + 1),
              (80 * rows, depth // 2 + 1, 4 * cols + 3), (60 * rows + 5, 2 * depth, 9 * cols), (1, 1, 1)]
    shapes += [(rng.randint(1, 300 * rows), rng.randint(1, 4 * depth), rng.randint(1, 12 * cols)) for _ in range(14)]
    for m, k, n in shapes:
        key = rng.choice([None, "w1", "w2"])
        if key is not None and rng.random() < 0.5:
            key = (key, k, n)
        rounding = rng.choice([None, (0, "nearest"), (3, "stochastic")])
        assert fast.gemm(m, k, n, rounding, key) == full.gemm(m, k, n, rounding, key), (m, k, n, key, rounding)
    assert fast.skipped_rows > fast.replayed_rows
    assert full.skipped_rows == 0


def test_fast_replay_falls_back_to_the_full_replay_when_the_planner_does_not_walk_its_tiles_lazily(monkeypatch):
    """A planner that reads its tiles some other way (here: lists of every tile and group made up front) cannot be
    made to jump: the fast path notices, restores the residency state and replays in full, with the same counts."""
    from fxtrain.sim.planner import CommandPlanner

    original = CommandPlanner.schedule

    def eager(self, plan, rounding, **kwargs):
        eager_plan = copy.copy(plan)
        eager_plan.tiles = list(plan.tiles)
        eager_plan.groups = None if plan.groups is None else list(plan.groups)
        return original(self, eager_plan, rounding, **kwargs)

    monkeypatch.setattr(CommandPlanner, "schedule", eager)
    config = EngineConfig(rows=2, cols=2, wl=16, depth=16)
    fast, full = _replay_pair(config)
    for m, k, n, key in [(301, 40, 9, "w"), (300, 7, 3, None), (301, 40, 9, "w")]:
        assert fast.gemm(m, k, n, (0, "nearest"), key) == full.gemm(m, k, n, (0, "nearest"), key)
    assert fast.skipped_rows == 0


def test_resnet20_step_traffic_is_predicted():
    """The time model prices a ResNet-20 training step on the iCEBreaker (close to a million RUN / RUN_TILES
    commands per step at batch 32, which the tile-by-tile replay took minutes for): every output tile is run and
    read once, and the MACs are those of the GEMM list."""
    from fxtrain.host.models import ResNet20
    from fxtrain.sim.gemm_plan import plan_gemm

    layers = timemodel.layer_geometry(ResNet20(), (1, 28, 28))
    gemms = timemodel.training_gemms(layers, 8)
    platform = timemodel.board_platform("icebreaker", "16.14")
    step = timemodel.estimate_step(platform, layers, 8)
    traffic = step.traffic
    tiles = sum(len(plan_gemm(platform.config, g.m, g.k, g.n).tiles) for g in gemms)
    assert traffic.read_results + sum(n * c for (_, n), c in traffic.run_tiles.items()) == tiles
    assert traffic.macs == sum(g.macs for g in gemms)
