"""GemmEngine's partial-sum memory (LOAD/SAVE runs) in the Amaranth simulator vs EngineModel: bit-exact tiles,
exact run cycles (run_cycles with load/save), counters and the error flag."""

import pytest
from amaranth.back import rtlil

from fxtrain.rtl.engine import GemmEngine
from fxtrain.sim.benches.engine_bench import expected_outputs, psum_scenario
from fxtrain.sim.engine import load_cycles, run_cycles, save_cycles
from fxtrain.sim.gemm import EngineConfig

from test_engine_rtl import check_against_model, simulate

# (rows, cols, depth, psum_slots, b_depth): 1 x N, N x 1, odd shapes, a deeper B memory
SHAPES = [(2, 4, 8, 3, None), (1, 3, 4, 2, None), (3, 1, 4, 4, 16), (3, 5, 8, 1, None)]


@pytest.mark.parametrize("rows,cols,depth,slots,b_depth", SHAPES)
def test_psum_runs_match_model(rows, cols, depth, slots, b_depth):
    """Chunk-outer K-split GEMMs over interleaved slots (K = 1 chunks, saturating high and low), back-to-back
    SAVE/LOAD of one slot, LOAD+SAVE runs, LOAD over non-zero accumulators and rejected LOAD/SAVE runs: every
    output word and saturation flag, every run's cycles (== run_cycles), busy/runs/rejected/saturated and
    the error flag equal the model's."""
    seed = 1000 + 97 * rows + 13 * cols + slots
    print(f"seed={seed}")
    config = EngineConfig(rows=rows, cols=cols, wl=8, depth=depth, max_k_log2=7, psum_slots=slots, b_depth=b_depth)
    ops = psum_scenario(config, seed, gemms=3)
    want_counters = expected_outputs(config, ops)[2]
    assert any(op[0] == "run" and op[8] and op[9] for op in ops if len(op) > 8)
    assert want_counters["rejected"] >= 4 and want_counters["saturated"] > 0
    check_against_model(config, ops, seed)


def test_psum_cycles_of_every_k():
    """Back to back, the measured occupancy of LOAD, SAVE and LOAD+SAVE runs of every k is run_cycles(k, drain,
    load, save), and busy sums them (load_cycles = rows + max(0, cols - 2) + 1 = 4, save_cycles = 2*rows + cols - 1)."""
    config = EngineConfig(rows=3, cols=2, wl=4, depth=4, max_k_log2=4, psum_slots=2)
    assert (load_cycles(config), save_cycles(config)) == (4, 7)
    flags = [(1, 0, 0, 1), (0, 0, 1, 1), (0, 1, 1, 0), (0, 0, 1, 0)]     # clear, drain, load, save
    ops = [("run", 0, 0, k, c, d, 1, 0, ld, sv, k % 2) for k in range(1, 5) for c, d, ld, sv in flags]
    _, cycles, counters, _, _ = simulate(config, ops, 0)
    assert cycles == [run_cycles(config, op[3], op[5], op[8], op[9]) for op in ops]
    assert counters["busy"] == sum(cycles)


def test_no_psum_memory_without_slots():
    """psum_slots = 0 adds nothing: no memory, no load/save/slot fields, the array without shift_in."""
    config = EngineConfig(rows=2, cols=2, wl=4, depth=4, max_k_log2=4)
    dut = GemmEngine(config)
    assert set(dut.layouts["run"].members) == {"a_base", "b_base", "k", "clear", "drain"}
    text = rtlil.convert(dut)
    assert "psum" not in text
    with_slots = rtlil.convert(GemmEngine(EngineConfig(rows=2, cols=2, wl=4, depth=4, max_k_log2=4, psum_slots=2)))
    assert "psum_mem" in with_slots
