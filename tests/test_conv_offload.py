"""Convolution mode on the host side (``sim/planner.py`` a_view, the driver, the replay): results equal the plain
path bit for bit, the map is written once per key and reused, and every case that cannot use it falls back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fxtrain.sim.conv import ConvGeometry, ConvView, conv_matrix, fmap_entries
from fxtrain.sim.engine import EngineModel, gemm_via_engine
from fxtrain.sim.gemm import EngineConfig, tiled_gemm
from fxtrain.sim.lfsr import lane_seeds
from fxtrain.sim.planner import CommandPlanner, Expand, Reused, WriteMap, WriteOperand, conv_fits, plan_gemm


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
    """Without the expander, or with a map that does not fit next to the B blocks, the schedule is the plain one
    (A written, no EXPAND) and conv_fits says so; a view of another shape is refused."""
    geom = ConvGeometry(3, 3, 8, 8, 3, 3, 1, 1, 1, 1)
    x = np.ones((3, 3, 8, 8), dtype=np.int64)
    plan = plan_gemm(EngineConfig(rows=2, cols=2, depth=32, b_depth=1024), geom.positions, geom.patch, 4)
    assert not conv_fits(EngineConfig(rows=2, cols=2, depth=32, b_depth=1024), plan, view_of(x, geom, False))
    small = EngineConfig(rows=2, cols=2, depth=32, b_depth=256, expander=True)   # map: 288 entries + B 27*2
    assert fmap_entries(small, geom) == 288
    assert not conv_fits(small, plan_gemm(small, geom.positions, geom.patch, 4), view_of(x, geom, False))
    for cfg in (replace(small, expander=False), small):
        items = list(CommandPlanner(cfg).schedule(plan_gemm(cfg, geom.positions, geom.patch, 4), None,
                                                  a_view=view_of(x, geom, False)))
        assert not any(isinstance(i, (Expand, WriteMap)) for i in items)
        assert any(isinstance(i, WriteOperand) and i.which == "A" for i in items)
    big = replace(small, b_depth=512)
    assert conv_fits(big, plan_gemm(big, geom.positions, geom.patch, 4), view_of(x, geom, False))
    with pytest.raises(ValueError, match="does not match"):
        conv_fits(big, plan_gemm(big, geom.positions, geom.patch + 1, 4), view_of(x, geom, False))


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
