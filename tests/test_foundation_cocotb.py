"""cocotb benches of the foundation blocks on Verilator and Icarus: LFSR lanes, rounder, PE.

Each bench design is built once per simulator per session (module-scoped fixtures) and plays thousands of
random and adversarial inputs in one simulation, comparing every output in every cycle with the golden models
(``fxtrain.sim.benches.block_checks``). The statistics tests use words and roundings captured from the hardware
in those runs. Seeds are printed (``pytest -s``) and in the bench logs.
"""

import json

import numpy as np
import pytest

from fxtrain.rtl.lfsr import LFSRLanes
from fxtrain.sim.benches.pe_bench import PEWithRounder
from fxtrain.sim.benches.rounder_bench import RounderWithLane
from fxtrain.sim.lfsr import lane_seeds, lane_words
from fxtrain.sim.randomness import lag1_correlation, rounding_bias

SEED = 20260511
WORDS = 4096
LFSR_CASES = {"leap32": {"n": 3, "width": 32, "leap": None}, "leap1": {"n": 2, "width": 32, "leap": 1}}
ROUNDER_CASES = {"wl16": {"wl": 16, "acc_width": 52, "shift_max": 32}, "wl8": {"wl": 8, "acc_width": 19,
                                                                                 "shift_max": 12}}
PE_CASES = {"wl16": {"wl": 16, "max_k": 16, "shift_max": 32}, "wl8": {"wl": 8, "max_k": 4, "shift_max": 12}}
STAT_COUNT = 3000


@pytest.fixture(scope="module")
def lfsr_runs(simulator, run_cocotb, tmp_path_factory):
    """Run the LFSR bench for every case; returns ``{case: captured lane-0 words}``."""
    out = {}
    for name, case in LFSR_CASES.items():
        path = tmp_path_factory.mktemp("lfsr") / f"{name}-{simulator}.json"
        params = dict(case, seed=SEED, cycles=1500, words=WORDS, out=str(path))
        print(f"lfsr bench {name} on {simulator}: seed={SEED}")
        lanes = LFSRLanes(case["n"], case["width"], leap=case["leap"])
        assert run_cocotb(lanes, "lfsr_lanes", "fxtrain.sim.benches.lfsr_bench", simulator, params) == 1
        out[name] = json.loads(path.read_text())
    return out


@pytest.fixture(scope="module")
def rounder_runs(simulator, run_cocotb, tmp_path_factory):
    """Run the rounder bench for every case; returns ``{case: (case, stat params, captured outputs)}``."""
    out = {}
    for name, case in ROUNDER_CASES.items():
        path = tmp_path_factory.mktemp("rounder") / f"{name}-{simulator}.json"
        shift = min(case["shift_max"], 12)
        stat = {"stat_acc": (3 << shift) + round(0.3 * (1 << shift)), "stat_shift": shift,
                "stat_count": STAT_COUNT, "stat_seed": lane_seeds(SEED, 1)[0]}
        params = dict(case, seed=SEED, count=3000, out=str(path), **stat)
        print(f"rounder bench {name} on {simulator}: seed={SEED}")
        harness = RounderWithLane(case["wl"], case["acc_width"], case["shift_max"])
        assert run_cocotb(harness, "rounder_with_lane", "fxtrain.sim.benches.rounder_bench", simulator,
                          params) == 2
        out[name] = (stat, json.loads(path.read_text()))
    return out


def test_lfsr_lanes_bench(lfsr_runs):
    """§4.1-§4.3: LFSRLanes Verilog equals the golden leap map in every cycle (bench asserts), zero seed loads
    are ignored, and the captured advance-then-use words are exactly ``lane_words`` of the lane's seed."""
    for name, case in LFSR_CASES.items():
        words = lfsr_runs[name]
        want, _ = lane_words(lane_seeds(SEED, case["n"], case["width"])[0], WORDS, case["width"], case["leap"])
        assert words == [int(w) for w in want], name


def test_hardware_lane_words_uncorrelated(lfsr_runs):
    """§4.2: consecutive 32-bit words of the hardware lane (leap = 32) have lag-1 correlation below 6/sqrt(n)."""
    result = lag1_correlation(lfsr_runs["leap32"])
    print(f"lag-1 correlation over {WORDS} hardware words: r={result.statistic:.4f}, bound {result.bound:.4f}")
    assert result.passed, result


def test_one_step_hardware_lfsr_fails_correlation(lfsr_runs):
    """§4.2: the same check rejects a plain one-bit-step LFSR (leap = 1) built in hardware, so it can fail."""
    result = lag1_correlation(lfsr_runs["leap1"])
    print(f"lag-1 correlation, leap=1: r={result.statistic:.4f}, bound {result.bound:.4f}")
    assert not result.passed, result


def test_rounder_bench(rounder_runs):
    """§3, §5: rounder Verilog equals round_shift on every output, with the stated latency, for adversarial
    (s = 0, s = shift_max, saturation both ends, acc extremes, ties) and random inputs in both modes (bench
    asserts; wl=16/acc 52/s<=32 and wl=8/acc 19/s<=12); the lane-fed statistics run is bit-exact as well."""
    for name, (stat, outputs) in rounder_runs.items():
        assert len(outputs["stochastic"]) == len(outputs["nearest"]) == STAT_COUNT, name


def test_stochastic_rounding_unbiased_in_hardware(rounder_runs):
    """§3, §4.4: a constant acc with fraction f = 0.3 ulp, rounded STAT_COUNT times by the hardware rounder with
    the hardware lane's words, has mean error within 6*sqrt(f(1-f)/n); the same check detects the bias of
    round-to-nearest on the same inputs."""
    for name, (stat, outputs) in rounder_runs.items():
        stochastic = rounding_bias(outputs["stochastic"], stat["stat_acc"], stat["stat_shift"])
        nearest = rounding_bias(outputs["nearest"], stat["stat_acc"], stat["stat_shift"])
        print(f"{name}: stochastic mean error {stochastic.statistic:+.4f} ulp, nearest {nearest.statistic:+.4f}, "
              f"bound {stochastic.bound:.4f}")
        assert stochastic.passed, (name, stochastic)
        assert not nearest.passed, (name, nearest)
        assert set(np.unique(outputs["stochastic"])) == {3, 4}, name


@pytest.mark.parametrize("case", PE_CASES)
def test_pe_bench(simulator, run_cocotb, case):
    """§5: PE Verilog equals the cycle model on every output every cycle and holds the exact dot product for
    K = 1 and K = max_k (most negative operands, max*min), random gaps, drains and overlapping readouts; the
    readout through the rounder equals round_shift (wl=16/max_k=16 and wl=8/max_k=4)."""
    params = dict(PE_CASES[case], seed=SEED, runs=150)
    print(f"pe bench {case} on {simulator}: seed={SEED}")
    harness = PEWithRounder(params["wl"], params["max_k"], params["shift_max"])
    assert run_cocotb(harness, "pe_with_rounder", "fxtrain.sim.benches.pe_bench", simulator, params) == 1
