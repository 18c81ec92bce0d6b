"""cocotb benches of the foundation blocks on Verilator and Icarus: LFSR lanes, rounder, PE.

Each bench design is built once per simulator per session (module-scoped fixtures) and plays thousands of
random and adversarial inputs in one simulation, comparing every output in every cycle with the golden models
(``fxtrain.sim.benches.block_checks``). The statistics tests use words and roundings captured from the hardware
in those runs. Seeds are printed (``pytest -s``) and in the bench logs.
"""

import json

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from fxtrain.rtl.lfsr import LFSRLanes
from fxtrain.sim.benches.pe_bench import PEWithRounder
from fxtrain.sim.benches.rounder_bench import RounderWithLane
from fxtrain.sim.lfsr import lane_seeds, lane_words
from fxtrain.sim.pe import accumulator_width
from fxtrain.sim.randomness import lag1_correlation, rounding_bias

SEED = 20260511
WORDS = 4096
STAT_COUNT = 3000
BENCH_MODULES = ",".join(f"fxtrain.sim.benches.{name}_bench" for name in ("lfsr", "rounder", "pe"))
# Two parameter sets, all six bench designs in ONE Verilog top (one build per simulator per session).
CASES = {
    "wl16": {"lfsr": {"n": 3, "width": 32, "leap": None},
             "rounder": {"wl": 16, "acc_width": 52, "shift_max": 32},
             "pe": {"wl": 16, "max_k": 16, "shift_max": 32}},
    "wl8": {"lfsr": {"n": 2, "width": 32, "leap": 1},
            "rounder": {"wl": 8, "acc_width": 19, "shift_max": 12},
            "pe": {"wl": 8, "max_k": 4, "shift_max": 12}},
}


class CombinedBenchTop(wiring.Component):
    """Test-session design: bench designs as signature members, so one build serves all their benches.

    Member ``name``'s ports appear in Verilog as ``<name>__<port>``; the benches find them through the
    ``prefix`` of their parameter sets.
    """

    def __init__(self, designs):
        self._designs = designs
        super().__init__({name: Out(design.signature) for name, design in designs.items()})

    def elaborate(self, platform):
        m = Module()
        for name, design in self._designs.items():
            m.submodules[name] = design
            wiring.connect(m, wiring.flipped(getattr(self, name)), design)
        return m


def _design(block, p):
    if block == "lfsr":
        return LFSRLanes(p["n"], p["width"], leap=p["leap"])
    if block == "rounder":
        return RounderWithLane(p["wl"], p["acc_width"], p["shift_max"])
    return PEWithRounder(p["wl"], p["max_k"], p["shift_max"])


@pytest.fixture(scope="module")
def bench_runs(simulator, run_cocotb, tmp_path_factory):
    """Run the LFSR, rounder and PE benches of both parameter sets in one simulation; returns per set the
    captured lane words and roundings."""
    out_dir = tmp_path_factory.mktemp(f"foundation-{simulator}")
    params = {"lfsr": [], "rounder": [], "pe": []}
    designs, results = {}, {}
    for name, case in CASES.items():
        shift = min(case["rounder"]["shift_max"], 12)
        stat = {"stat_acc": (3 << shift) + round(0.3 * (1 << shift)), "stat_shift": shift,
                "stat_count": STAT_COUNT, "stat_seed": lane_seeds(SEED, 1)[0]}
        extra = {"lfsr": dict(seed=SEED, cycles=1500, words=WORDS, out=str(out_dir / f"lfsr-{name}.json")),
                 "rounder": dict(seed=SEED, count=3000, out=str(out_dir / f"rounder-{name}.json"),
                                 coverage_out=str(out_dir / f"rounder-coverage-{name}.json"), **stat),
                 "pe": dict(seed=SEED, runs=400, coverage_out=str(out_dir / f"pe-coverage-{name}.json"))}
        for block in params:
            prefix = f"{block}_{name}"
            designs[prefix] = _design(block, case[block])
            params[block].append(dict(case[block], prefix=prefix, **extra[block]))
        results[name] = {"name": name, "case": case, "stat": stat}
    print(f"foundation benches on {simulator}: seed={SEED}")
    ran = run_cocotb(CombinedBenchTop(designs), "foundation_benches", BENCH_MODULES, simulator, params)
    assert ran == 4, f"{ran} cocotb tests ran, expected 4"
    for name, result in results.items():
        result["words"] = json.loads((out_dir / f"lfsr-{name}.json").read_text())
        result["roundings"] = json.loads((out_dir / f"rounder-{name}.json").read_text())
        result["rounder_coverage"] = json.loads((out_dir / f"rounder-coverage-{name}.json").read_text())
        result["pe_coverage"] = json.loads((out_dir / f"pe-coverage-{name}.json").read_text())
    return results


@pytest.fixture(params=list(CASES))
def bench_run(request, bench_runs):
    return bench_runs[request.param]


def test_lfsr_lanes_bench(bench_run):
    """§4.1-§4.3: LFSRLanes Verilog equals the golden leap map in every cycle (bench asserts), zero seed loads
    are ignored, and the captured advance-then-use words are exactly ``lane_words`` of the lane's seed."""
    lfsr = bench_run["case"]["lfsr"]
    want, _ = lane_words(lane_seeds(SEED, lfsr["n"], lfsr["width"])[0], WORDS, lfsr["width"], lfsr["leap"])
    assert bench_run["words"] == [int(w) for w in want]


def test_hardware_lane_words_correlation(bench_run):
    """§4.2: consecutive 32-bit words of the hardware lane with the engine's leap (32) have lag-1 correlation
    below 6/sqrt(n); the same check rejects the plain one-bit-step LFSR (leap = 1, the wl8 set), so it can fail."""
    lfsr = bench_run["case"]["lfsr"]
    result = lag1_correlation(bench_run["words"])
    print(f"leap={lfsr['leap']}: lag-1 correlation over {WORDS} hardware words r={result.statistic:+.4f}, "
          f"bound {result.bound:.4f}")
    if lfsr["leap"] in (None, lfsr["width"]):
        assert result.passed, result
    else:
        assert lfsr["leap"] == 1
        assert not result.passed, result


def test_rounder_bench(bench_run):
    """§3, §5: rounder Verilog equals round_shift on every output, with the stated latency, for adversarial
    (s = 0, s = shift_max, saturation both ends, acc extremes, ties) and random inputs in both modes (bench
    asserts; wl=16/acc 52/s<=32 and wl=8/acc 19/s<=12); the lane-fed statistics run is bit-exact as well."""
    roundings, coverage = bench_run["roundings"], bench_run["rounder_coverage"]
    shift_max = bench_run["case"]["rounder"]["shift_max"]
    print(f"{bench_run['name']}: rounder coverage {coverage}")
    assert coverage["count"] > 3000
    assert coverage["shifts"] == {"0": list(range(shift_max + 1)), "1": list(range(shift_max + 1))}
    assert coverage["sat_high"] and coverage["sat_low"]
    assert len(roundings["stochastic"]) == len(roundings["nearest"]) == STAT_COUNT


def test_stochastic_rounding_unbiased_in_hardware(bench_run):
    """§3, §4.4: a constant acc with fraction f = 0.3 ulp, rounded STAT_COUNT times by the hardware rounder with
    the hardware lane's words, has mean error within 6*sqrt(f(1-f)/n); the same check detects the bias of
    round-to-nearest on the same inputs."""
    stat, roundings = bench_run["stat"], bench_run["roundings"]
    stochastic = rounding_bias(roundings["stochastic"], stat["stat_acc"], stat["stat_shift"])
    nearest = rounding_bias(roundings["nearest"], stat["stat_acc"], stat["stat_shift"])
    print(f"{bench_run['name']}: stochastic mean error {stochastic.statistic:+.4f} ulp, "
          f"nearest {nearest.statistic:+.4f} ulp, bound {stochastic.bound:.4f}")
    assert stochastic.passed, stochastic
    assert not nearest.passed, nearest
    assert set(np.unique(roundings["stochastic"])) == {3, 4}


def test_pe_bench(bench_run):
    """§5: PE Verilog equals the cycle model on every output every cycle and holds the exact dot product for
    K = 1 and K = max_k (most negative operands, max*min), random gaps, drains and overlapping readouts; the
    readout through the rounder equals round_shift (bench asserts; wl=16/max_k=16 and wl=8/max_k=4)."""
    pe, coverage = bench_run["case"]["pe"], bench_run["pe_coverage"]
    print(f"{bench_run['name']}: PE coverage {coverage}")
    assert accumulator_width(pe["wl"], pe["max_k"]) == {16: 36, 8: 18}[pe["wl"]]
    assert coverage["readouts"] >= 400 and coverage["sums"] >= 300 and coverage["cycles"] > 1000
    assert coverage["extreme_sum"] and coverage["sat_high"] and coverage["sat_low"]
