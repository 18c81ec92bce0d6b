"""Convolution mode on the host side (``sim/planner.py`` a_view, the driver, the replay): results equal the plain
path bit for bit, the map is written once per key and reused, and every case that cannot use it falls back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fxtrain.sim.conv import EXPAND_ARGS, ConvGeometry, ConvView, conv_matrix, fmap_entries
from fxtrain.sim.input_grad import input_grad_geometry
from fxtrain.sim.engine import EngineModel, gemm_via_engine
from fxtrain.sim.gemm import EngineConfig, tiled_gemm

from conftest import CorruptNthRequest, assert_equal_states, lenet_sgd_states
from fxtrain.sim.lfsr import lane_seeds
from fxtrain.sim.gemm_plan import plan_gemm
from fxtrain.sim.planner import CommandPlanner, conv_fits, conv_window_room
from fxtrain.sim.schedule_items import Expand, Reused, WriteMap, WriteOperand


def random_geometry(rng, cols):
    """A random small convolution: stride 1 or 2, padding 0..1, 1x1 or 3x3 kernels, C not a multiple of the array."""
    k = int(rng.choice([1, 3]))
    s = int(rng.integers(1, 3))
    c = int(rng.integers(1, 4)) * cols + int(rng.integers(1, max(cols, 2)))
    return ConvGeometry(int(rng.integers(1, 3)), c, int(rng.integers(k, 8)), int(rng.integers(k, 8)), k, k, s, s,
                        int(rng.integers(0, 2)), int(rng.integers(0, 2)))


def view_of(x, geom, transposed, key="L", digest=b"x"):
    return ConvView(x, geom, transposed, key, digest)


def _golden(cfg, a, b, view, planner, seed=3):
    model = EngineModel(cfg)
    for lane, s in enumerate(lane_seeds(seed, cfg.lanes, cfg.lane_width)):
        model.set_seed(lane, s)
    return gemm_via_engine(model, a, b, 7, "stochastic", planner=planner, a_view=view)


@pytest.mark.parametrize("seed", range(6))
def test_golden_model_in_conv_mode_equals_the_plain_gemm_in_both_orientations(seed):
    """gemm_via_engine with a ConvView (map in B memory, A by EXPAND) equals tiled_gemm of the materialized
    matrix, forward (tile loop) and transposed (K-split when M exceeds the depth)."""
    rng = np.random.default_rng(seed)
    print("seed", seed)
    cfg = EngineConfig(rows=int(rng.integers(1, 5)), cols=int(rng.integers(1, 5)), depth=16, b_depth=1024,
                       expander=True)
    geom = random_geometry(rng, cfg.cols)
    x = rng.integers(-200, 200, (geom.n, geom.c, geom.h, geom.w))
    for transposed in (False, True):
        a = conv_matrix(x, geom, transposed)
        b = rng.integers(-200, 200, (a.shape[1], int(rng.integers(1, 7))))
        view = view_of(x, geom, transposed)
        planner = CommandPlanner(cfg)
        got = _golden(cfg, a, b, view, planner)
        want = tiled_gemm(cfg, a, b, 7, "stochastic", lane_seeds(3, cfg.lanes, cfg.lane_width))
        assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
        items = list(CommandPlanner(cfg).schedule(plan_gemm(cfg, *a.shape, b.shape[1]), (7, 1), a_view=view))
        assert any(isinstance(i, Expand) for i in items)
        assert not any(isinstance(i, WriteOperand) and i.which == "A" for i in items)


def test_tile_loop_expands_as_many_tile_rows_as_the_a_depth_holds_and_the_map_serves_both_gemms():
    """Forward: one EXPAND per depth // K tile rows, the map written once; the weight gradient with the same key
    and digest reuses the resident map (no second WriteMap)."""
    cfg = EngineConfig(rows=2, cols=2, depth=32, b_depth=2048, expander=True)
    geom = ConvGeometry(2, 3, 6, 6, 3, 3, 1, 1, 1, 1)          # M = 72, KC = 27
    x = np.arange(geom.words).reshape(geom.n, geom.c, geom.h, geom.w) % 50
    planner = CommandPlanner(cfg)
    fwd = list(planner.schedule(plan_gemm(cfg, geom.positions, geom.patch, 4), (1, 1),
                                a_view=view_of(x, geom, False)))
    expands = [i for i in fwd if isinstance(i, Expand)]
    assert [i.blocks for i in expands] == [1] * 36          # depth 32 // K 27 = 1 tile row per EXPAND
    assert sum(isinstance(i, WriteMap) for i in fwd) == 1
    wgrad = list(planner.schedule(plan_gemm(cfg, geom.patch, geom.positions, 4), (1, 1),
                                  a_view=view_of(x, geom, True)))
    assert not any(isinstance(i, WriteMap) for i in wgrad)
    assert any(isinstance(i, Reused) and i.which == "map" for i in wgrad)
    small = CommandPlanner(cfg)
    items = list(small.schedule(plan_gemm(cfg, geom.positions, 9, 4), (1, 1),
                                a_view=view_of(x[:, :1], replace(geom, c=1), False)))
    assert [i.blocks for i in items if isinstance(i, Expand)] == [3] * 12 # depth 32 // K 9 = 3 rows: 36 rows


def test_no_expander_or_a_map_too_big_falls_back_to_sending_a():
    """Without the expander, or with a map of which not even one tile row's window fits next to the B blocks, the
    schedule is the plain one (A written, no EXPAND) and conv_fits / conv_window_room say so; a view of another
    shape is refused."""
    geom = ConvGeometry(3, 3, 8, 8, 3, 3, 1, 1, 1, 1)
    x = np.ones((3, 3, 8, 8), dtype=np.int64)
    plan = plan_gemm(EngineConfig(rows=2, cols=2, depth=32, b_depth=1024), geom.positions, geom.patch, 4)
    assert not conv_fits(EngineConfig(rows=2, cols=2, depth=32, b_depth=1024), plan, view_of(x, geom, False))
    tiny = EngineConfig(rows=2, cols=2, depth=32, b_depth=128, expander=True)   # image: 96 entries + B 27*2
    assert fmap_entries(tiny, geom) == 288
    tiny_plan = plan_gemm(tiny, geom.positions, geom.patch, 4)
    assert not conv_fits(tiny, tiny_plan, view_of(x, geom, False))
    assert conv_window_room(tiny, tiny_plan, view_of(x, geom, False)) == 0
    for cfg in (replace(tiny, expander=False, b_depth=1024), tiny):
        items = list(CommandPlanner(cfg).schedule(plan_gemm(cfg, geom.positions, geom.patch, 4), None,
                                                  a_view=view_of(x, geom, False)))
        assert not any(isinstance(i, (Expand, WriteMap)) for i in items)
        assert any(isinstance(i, WriteOperand) and i.which == "A" for i in items)
    big = replace(tiny, b_depth=512)
    assert conv_fits(big, plan_gemm(big, geom.positions, geom.patch, 4), view_of(x, geom, False))
    with pytest.raises(ValueError, match="does not match"):
        conv_fits(big, plan_gemm(big, geom.positions, geom.patch + 1, 4), view_of(x, geom, False))


@pytest.mark.parametrize("geom", [ConvGeometry(3, 3, 8, 8, 3, 3, 1, 1, 1, 1), ConvGeometry(6, 2, 7, 7, 3, 3),
                                  ConvGeometry(4, 2, 9, 9, 3, 3, 2, 2, 1, 1)])
def test_a_map_too_big_for_the_b_memory_goes_in_windows_and_results_stay_exact(geom):
    """A forward map larger than the B memory goes in windows (stride 1 and 2, one or several images each): each
    EXPAND gets the images its tile rows read as a map keyed by the image range, no window larger than the room
    next to the B block; no A is written and the golden model, and the driver over the protocol emulator, equal
    the plain GEMM; the transposed orientation (a K-split) falls back to sending A."""
    rng = np.random.default_rng(geom.words)
    print("seed", geom.words)
    cfg = EngineConfig(rows=2, cols=2, depth=32, b_depth=256, expander=True)
    x = rng.integers(-300, 300, (geom.n, geom.c, geom.h, geom.w))
    view = view_of(x, geom, False)
    plan = plan_gemm(cfg, geom.positions, geom.patch, 4)
    room = conv_window_room(cfg, plan, view)
    assert not conv_fits(cfg, plan, view) and room == 256 - plan.k * max(g.count for g in plan.groups)
    items = list(CommandPlanner(cfg).schedule(plan, None, a_view=view))
    maps = [i for i in items if isinstance(i, WriteMap)]
    assert maps and all(i.view.key[0] == "L" and i.view.geom.n == i.view.key[2] - i.view.key[1] for i in maps)
    assert all(i.entries <= room for i in maps)
    assert not any(isinstance(i, WriteOperand) and i.which == "A" for i in items)
    a = conv_matrix(x, geom)
    b = rng.integers(-300, 300, (geom.patch, 4))
    got = _golden(cfg, a, b, view, CommandPlanner(cfg))
    want = tiled_gemm(cfg, a, b, 7, "stochastic", lane_seeds(3, cfg.lanes, cfg.lane_width))
    assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
    at = conv_matrix(x, geom, True)
    assert conv_window_room(cfg, plan_gemm(cfg, *at.shape, 4), view_of(x, geom, True)) == 0
    dev, exact = _device(cfg), ExactEmulator(replace(cfg, expander=False), seed=5)
    assert np.array_equal(dev.gemm(a, b, 7, "stochastic", a_view=view).c, exact.gemm(a, b, 7, "stochastic").c)
    assert dev.counters["a_entries_sent"] == 0 and dev.counters["map_entries_sent"] >= fmap_entries(cfg, geom)


@pytest.mark.parametrize("geom", [ConvGeometry(3, 3, 8, 8, 3, 3, 1, 1, 1, 1), ConvGeometry(6, 2, 7, 7, 3, 3),
                                  ConvGeometry(4, 2, 9, 9, 3, 3, 2, 2, 1, 1)])
def test_a_weight_gradient_k_split_takes_map_windows_chunk_outer_and_stays_exact(geom):
    """The transposed (weight-gradient) GEMM with a map larger than the B memory, K-split and played chunk-outer
    through partial sums: every chunk's EXPANDs read the window of the images its positions cover (one window per
    chunk pass, shared by the group's tiles), no A is written, and the golden model and the driver equal the plain
    GEMM; without partial sums it falls back to sending A."""
    rng = np.random.default_rng(geom.words + 1)
    print("seed", geom.words + 1)
    cfg = EngineConfig(rows=2, cols=2, depth=32, b_depth=256, expander=True, psum_slots=8)
    x = rng.integers(-300, 300, (geom.n, geom.c, geom.h, geom.w))
    view = view_of(x, geom, True)
    a = conv_matrix(x, geom, True)
    b = rng.integers(-300, 300, (a.shape[1], 3))
    plan = plan_gemm(cfg, *a.shape, 3)
    assert len(plan.chunks) > 1 and not conv_fits(cfg, plan, view)
    room = conv_window_room(cfg, plan, view, chunk_outer=True)
    assert room > 0 and conv_window_room(cfg, plan, view) == 0
    items = list(CommandPlanner(cfg).schedule(plan, None, a_view=view))
    maps = [i for i in items if isinstance(i, WriteMap)]
    assert maps and all(i.view.transposed and i.entries <= room for i in maps)
    assert not any(isinstance(i, WriteOperand) and i.which == "A" for i in items)
    got = _golden(cfg, a, b, view, CommandPlanner(cfg))
    want = tiled_gemm(cfg, a, b, 7, "stochastic", lane_seeds(3, cfg.lanes, cfg.lane_width))
    assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
    dev, exact = _device(cfg), ExactEmulator(replace(cfg, expander=False, psum_slots=0), seed=5)
    assert np.array_equal(dev.gemm(a, b, 7, "stochastic", a_view=view).c, exact.gemm(a, b, 7, "stochastic").c)
    assert dev.counters["a_entries_sent"] == 0 and dev.counters["expands"] > 0
    plain = list(CommandPlanner(replace(cfg, psum_slots=0)).schedule(plan, None, a_view=view))
    assert not any(isinstance(i, WriteMap) for i in plain)


class _EvictingPlanner(CommandPlanner):
    """A planner whose map is overwritten (junk in the model's B memory, forgotten by the planner) after every
    EXPAND, as another operand's write could do."""

    def __init__(self, config, model, key):
        super().__init__(config)
        self.model, self.key = model, key

    def schedule(self, *args, **kwargs):
        for item in super().schedule(*args, **kwargs):
            yield item
            if isinstance(item, Expand):
                start, length, _ = self.b_mem._ranges.pop(("map", self.key))
                self.model.b_mem[start:start + length] = 12345


@pytest.mark.parametrize("transposed", [False, True])
def test_a_map_evicted_between_expands_is_written_again_and_results_stay_exact(transposed):
    """The map is looked up again before every EXPAND: one evicted (and overwritten) after each EXPAND is
    re-sent each time, and results equal the plain GEMM."""
    rng = np.random.default_rng(11)
    cfg = EngineConfig(rows=2, cols=2, depth=8, b_depth=256, expander=True)
    geom = ConvGeometry(1, 2, 7, 7, 3, 3, 1, 1, 1, 1)
    x = rng.integers(-90, 90, (1, 2, 7, 7))
    a = conv_matrix(x, geom, transposed)                         # 49 x 18 / 18 x 49 (K-split, chunk 8)
    b = rng.integers(-90, 90, (a.shape[1], 5))
    model = EngineModel(cfg)
    for lane, s in enumerate(lane_seeds(3, cfg.lanes, cfg.lane_width)):
        model.set_seed(lane, s)
    planner = _EvictingPlanner(cfg, model, "L")
    got = gemm_via_engine(model, a, b, 7, "stochastic", planner=planner, a_view=view_of(x, geom, transposed))
    want = tiled_gemm(cfg, a, b, 7, "stochastic", lane_seeds(3, cfg.lanes, cfg.lane_width))
    assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
    items = list(_EvictingPlanner(cfg, EngineModel(cfg), "L").schedule(
        plan_gemm(cfg, *a.shape, 5), None, a_view=view_of(x, geom, transposed)))
    assert sum(isinstance(i, WriteMap) for i in items) == sum(isinstance(i, Expand) for i in items) > 1


# -- the driver over the protocol emulator --

from fxtrain.host.conv_offload import with_digest  # noqa: E402
from fxtrain.host.device import Device  # noqa: E402
from fxtrain.host.emulator import ExactEmulator  # noqa: E402
from fxtrain.host.transport import EmulatorTransport  # noqa: E402
from fxtrain.sim.protocol import ProtocolEmulator  # noqa: E402
from fxtrain.sim.wire import Command  # noqa: E402

DEV_CONFIG = EngineConfig(rows=3, cols=2, wl=12, depth=32, b_depth=1024, max_k_log2=12, expander=True)


def _device(config, transport_cls=EmulatorTransport, seed=5, **kwargs):
    dev = Device(transport_cls(ProtocolEmulator(config, rx_buffer=512), **kwargs))
    dev.seed(seed)
    return dev


def _conv_gemms(rng, geom, cols):
    """The forward and weight-gradient GEMMs of one random convolution (A, B, view) in step order."""
    x = rng.integers(-2000, 2000, (geom.n, geom.c, geom.h, geom.w))
    w = rng.integers(-2000, 2000, (geom.patch, int(rng.integers(1, 2 * cols + 2))))
    dy = rng.integers(-2000, 2000, (geom.positions, w.shape[1]))
    key = ("conv", int(rng.integers(1 << 30)))
    return [(conv_matrix(x, geom, False), w, ConvView(x, geom, False, key)),
            (conv_matrix(x, geom, True), dy, ConvView(x, geom, True, key))]


@pytest.mark.parametrize("seed", range(4))
def test_device_in_conv_mode_equals_the_plain_path_and_the_exact_emulator_with_far_fewer_bytes(seed):
    """Device over the ProtocolEmulator with the expander, the same without it (falls back: no EXPAND) and the
    exact emulator give identical results for random convolutions (stride 1/2, padding, 1x1/3x3 kernels, C not
    a multiple of the array) in both GEMMs; conv mode sends fewer bytes (the map once, EXPANDs instead of A)."""
    rng = np.random.default_rng(seed)
    print("seed", seed)
    conv_dev, plain_dev = _device(DEV_CONFIG), _device(replace(DEV_CONFIG, expander=False))
    exact = ExactEmulator(replace(DEV_CONFIG, expander=False), seed=5)
    for _ in range(2):
        geom = random_geometry(rng, DEV_CONFIG.cols)
        for a, b, view in _conv_gemms(rng, geom, DEV_CONFIG.cols):
            want = exact.gemm(a, b, 9, "stochastic")
            for dev in (conv_dev, plain_dev):
                got = dev.gemm(a, b, 9, "stochastic", a_view=view)
                assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
    assert plain_dev.counters["expands"] == 0 and plain_dev.counters["map_entries_sent"] == 0
    assert conv_dev.counters["expands"] > 0 and conv_dev.counters["a_entries_sent"] == 0
    assert conv_dev.counters["map_entries_reused"] > 0          # the weight gradient reused the forward's map
    print("bytes sent: conv", conv_dev.counters["bytes_sent"], "plain", plain_dev.counters["bytes_sent"])
    assert conv_dev.counters["bytes_sent"] < plain_dev.counters["bytes_sent"]


def test_device_falls_back_when_the_map_does_not_fit_next_to_the_b_blocks():
    """A feature map larger than the B memory minus the GEMM's B blocks: no EXPAND, A written, exact result."""
    rng = np.random.default_rng(7)
    cfg = replace(DEV_CONFIG, b_depth=64)
    geom = ConvGeometry(2, 3, 6, 6, 3, 3, 1, 1, 1, 1)               # 216 words: 108 entries > 64
    dev, exact = _device(cfg), ExactEmulator(replace(cfg, expander=False), seed=5)
    for a, b, view in _conv_gemms(rng, geom, cfg.cols):
        assert np.array_equal(dev.gemm(a, b, 9, "nearest", a_view=view).c, exact.gemm(a, b, 9, "nearest").c)
    assert dev.counters["expands"] == 0 and dev.counters["a_entries_sent"] > 0




@pytest.mark.parametrize("cmd,nth", [(Command.EXPAND, 0), (Command.EXPAND, 3), (Command.WRITE_B, 0)])
def test_a_corrupted_expand_or_map_frame_is_recovered_exactly(cmd, nth):
    """A corrupted EXPAND or map WRITE_B frame: the driver rewinds, forgets residency and finishes the GEMM (plain
    path); both GEMMs and a later one that needs the map again equal the exact emulator."""
    rng = np.random.default_rng(3)
    geom = ConvGeometry(2, 3, 7, 7, 3, 3, 2, 2, 1, 1)
    dev = _device(DEV_CONFIG, CorruptNthRequest, cmd=cmd, nth=nth, where="crc")
    exact = ExactEmulator(replace(DEV_CONFIG, expander=False), seed=5)
    gemms = _conv_gemms(rng, geom, DEV_CONFIG.cols)
    for a, b, view in gemms + gemms:
        got = dev.gemm(a, b, 9, "stochastic", a_view=view)
        want = exact.gemm(a, b, 9, "stochastic")
        assert np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
    assert dev.transport.hit and dev.counters["rewinds"] == 1 and dev.counters["expands"] > 0


def test_a_5x5_convolution_sends_a_fraction_of_the_bytes():
    """LeNet-like 5x5 kernel, stride 1: the two GEMMs send under a quarter of the plain path's bytes (the im2col
    matrices repeat each input word up to 25 times), results exact."""
    rng = np.random.default_rng(2)
    geom = ConvGeometry(2, 2, 12, 12, 5, 5)
    cfg = replace(DEV_CONFIG, depth=128)
    conv_dev, plain_dev = _device(cfg), _device(replace(cfg, expander=False))
    for a, b, view in _conv_gemms(rng, geom, cfg.cols):
        assert np.array_equal(conv_dev.gemm(a, b, 9, "nearest", a_view=view).c,
                              plain_dev.gemm(a, b, 9, "nearest", a_view=view).c)
    conv_sent, plain_sent = conv_dev.counters["bytes_sent"], plain_dev.counters["bytes_sent"]
    print(f"bytes sent: conv {conv_sent}, plain {plain_sent}; A entries {plain_dev.counters['a_entries_sent']}, "
          f"map entries {conv_dev.counters['map_entries_sent']}, {conv_dev.counters['expands']} EXPANDs")
    assert conv_sent < 0.25 * plain_sent


def test_lenet_training_steps_on_a_device_with_the_expander_equal_the_exact_emulator():
    """Three SGD steps of LeNet (batch 4) with every GEMM on a Device over the ProtocolEmulator with the expander
    give the same weights, bit for bit, as on the exact emulator; the convolutions went through conv mode (maps
    and EXPANDs instead of A; only the linear layers write A): per step the maps of conv1's and conv2's inputs
    and of conv2's output gradient (input_grad="convolution": its input gradient is a convolution of dY)."""

    class Recording(ProtocolEmulator):
        """Records the map geometry (n, c, h, w, kh, ph) of every EXPAND it executes."""
        geometries = set()

        def _expand(self, args):
            a = EXPAND_ARGS.unpack(args)
            self.geometries.add(ConvGeometry(a["n"], a["c"], a["h"], a["w"], a["kh"], a["kw"], a["sh"], a["sw"],
                                             a["ph"], a["pw"]))
            return super()._expand(args)

    cfg = EngineConfig(rows=4, cols=2, wl=16, depth=512, b_depth=16384, expander=True)
    device = Device(EmulatorTransport(Recording(cfg)))
    device.seed(11)
    got, want = lenet_sgd_states((device, ExactEmulator(replace(cfg, expander=False), seed=11)), steps=3,
                                 input_grad="convolution")
    assert_equal_states(got, want)
    c = device.counters
    print({k: c[k] for k in ("bytes_sent", "map_entries_sent", "map_entries_reused", "expands", "a_entries_sent")})
    assert c["expands"] > 0 and c["map_entries_sent"] > 0 and c["a_entries_sent"] < c["map_entries_sent"]
    conv1, conv2 = ConvGeometry(4, 1, 28, 28, 5, 5), ConvGeometry(4, 6, 12, 12, 5, 5)
    assert Recording.geometries == {conv1, conv2, input_grad_geometry(conv2, 16)}


class _RecordingEmulator(ExactEmulator):
    """Records (A, B, a_view) of every call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def gemm(self, a, b, shift, mode, *, b_key=None, a_view=None):
        self.calls.append((np.asarray(a, dtype=np.int64), a_view))
        return super().gemm(a, b, shift, mode, b_key=b_key, a_view=a_view)


def test_fixed_conv2d_passes_views_of_exactly_its_a_operands_and_approximate_methods_pass_none():
    """FixedConv2d (stride 2, padding 1) hands the forward and weight-gradient GEMMs a ConvView whose matrix is
    the A operand it sends, with one key and digest for both and a new key per forward pass; its input gradient
    (patches) and linear layers get none; a stride-1 layer's input gradient gets a view of the dY map with
    input_grad="convolution"; with an approximate method attached no GEMM gets one."""
    import torch

    from fxtrain.host.layers import FixedConfig, FixedConv2d, Offload
    from fxtrain.host.methods import MethodConfig, Methods
    from fxtrain.host.methods.approx import LayerApprox

    backend = _RecordingEmulator(EngineConfig(rows=2, cols=3, depth=64))
    layer = FixedConv2d(3, 4, 3, stride=2, padding=1, fixed=FixedConfig(wl=16), offload=Offload(backend, seed=1))
    x = torch.rand(2, 3, 7, 7, generator=torch.Generator().manual_seed(4), requires_grad=True)
    keys = []
    for _ in range(2):
        backend.calls.clear()
        layer(x).sum().backward()
        (a_fwd, fwd), (_, grad_in), (a_wg, wg) = backend.calls
        assert grad_in is None and fwd is not None and wg is not None
        assert not fwd.transposed and wg.transposed and fwd.key == wg.key
        assert with_digest(fwd).digest == with_digest(wg).digest != b""
        assert np.array_equal(fwd.matrix(), a_fwd) and np.array_equal(wg.matrix(), a_wg)
        assert fwd.geom == ConvGeometry(2, 3, 7, 7, 3, 3, 2, 2, 1, 1)
        keys.append(fwd.key)
    assert keys[0] != keys[1]
    # stride 1 with input_grad="convolution": the input gradient is a convolution of the dY map (its own key), A
    # exactly its im2col; by default (patches) it gets no view
    for input_grad in ("patches", "convolution"):
        layer1 = FixedConv2d(3, 4, 3, padding=1, fixed=FixedConfig(wl=16, input_grad=input_grad),
                             offload=Offload(backend, seed=1))
        backend.calls.clear()
        layer1(x).sum().backward()
        (_, fwd), (a_in, grad_in), _ = backend.calls
        if input_grad == "patches":
            assert grad_in is None and a_in.shape == (2 * 49, 4)
            continue
        assert grad_in.geom == input_grad_geometry(fwd.geom, 4) == ConvGeometry(2, 4, 7, 7, 3, 3, 1, 1, 1, 1)
        assert not grad_in.transposed and grad_in.key != fwd.key and np.array_equal(grad_in.matrix(), a_in)
    layer.approx = LayerApprox(Methods(MethodConfig(sampling="topk", sample_ratio=0.5), seed=2), 0, True)
    backend.calls.clear()
    layer(x).sum().backward()
    assert backend.calls and all(view is None for _, view in backend.calls)
