"""The partial-sum memory's golden model (``sim/engine.py``, ``sim/payloads.py``): SAVE/LOAD keep a tile's exact
wide sums between runs, the flag rules, the cycle formula, and the protocol emulator's RUN with a slot."""

import numpy as np
import pytest

from fxtrain.sim.engine import (EngineModel, load_cycles, run_cycles, run_is_valid, save_cycles)
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.payloads import RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE, run_args, run_flags_ok
from fxtrain.sim.protocol import Command, ProtocolEmulator, ResponseParser, Status, encode_request

SEED = 20261202
CFG = EngineConfig(rows=3, cols=2, wl=8, depth=16, b_depth=64, max_k_log2=10, psum_slots=5)


def test_saved_partial_sums_interleaved_over_tiles_equal_one_accumulation():
    """Tiles computed chunk by chunk, interleaved (chunk-outer) through SAVE/LOAD slots, drain exactly what
    chunk-inner runs of each tile drain, in the same order (same lane words); extremes included."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    for trial in range(20):
        tiles, chunks, k = 4, 3, int(rng.integers(1, 6))
        lo, hi = (-128, 128) if trial else (-128, -127)          # trial 0: every operand the negative extreme
        a = rng.integers(lo, hi, (tiles, chunks, k, CFG.rows))
        b = rng.integers(lo, hi, (tiles, chunks, k, CFG.cols))
        plain, inter = EngineModel(CFG), EngineModel(CFG)
        for e in (plain, inter):
            e.set_seeds([0x1234 + j for j in range(CFG.cols)])
        for t in range(tiles):
            for c in range(chunks):
                plain.write_a(0, a[t, c])
                plain.write_b(0, b[t, c])
                plain.run(0, 0, k, c == 0, c == chunks - 1, 3, "stochastic")
        for c in range(chunks):
            for t in range(tiles):
                inter.write_a(0, a[t, c])
                inter.write_b(0, b[t, c])
                inter.run(0, 0, k, c == 0, c == chunks - 1, 3, "stochastic", load=c > 0, save=c < chunks - 1,
                          slot=t)
        assert len(plain.results) == len(inter.results) == tiles
        for (p_out, p_sat), (i_out, i_sat) in zip(plain.results, inter.results):
            assert (p_out == i_out).all() and (p_sat == i_sat).all()
        assert plain.lane_state == inter.lane_state


def test_flag_rules_and_cycles():
    """LOAD excludes CLEAR, SAVE excludes DRAIN, a slot must exist; an engine without slots refuses both; a
    rejected run changes nothing; cycles add load_cycles before and end save_cycles after the last entry."""
    assert run_flags_ok(CFG, RUN_LOAD | RUN_SAVE, 4) and not run_flags_ok(CFG, RUN_LOAD | RUN_SAVE, 5)
    assert not run_flags_ok(CFG, RUN_LOAD | RUN_CLEAR, 0) and not run_flags_ok(CFG, RUN_SAVE | RUN_DRAIN, 0)
    assert not run_flags_ok(CFG, 16, 0) and run_flags_ok(CFG, RUN_CLEAR | RUN_DRAIN, 99)
    assert not run_flags_ok(EngineConfig(), RUN_SAVE, 0)
    assert not run_is_valid(CFG, 0, 0, 4, RUN_SAVE, 5) and run_is_valid(CFG, 0, 0, 4, RUN_SAVE, 0)
    e = EngineModel(CFG)
    e.acc[:] = 7
    assert e.run(0, 0, 4, False, False, load=True, slot=5) == 1 and e.error and (e.acc == 7).all()
    assert run_cycles(CFG, 4, False, load=True) == 4 + load_cycles(CFG) == 4 + CFG.rows + max(0, CFG.cols - 2) + 1
    assert run_cycles(CFG, 4, False, save=True) == 4 + save_cycles(CFG) == 4 + 1 + 2 * CFG.rows + CFG.cols - 2
    assert run_cycles(CFG, 4, True, load=True) == run_cycles(CFG, 4, True) + load_cycles(CFG)
    with pytest.raises(ValueError, match="psum_slots must be an integer from 0 to 65535, not -1"):
        EngineConfig(psum_slots=-1)


def _status(emu, payload):
    (resp,) = ResponseParser().feed(emu.feed(encode_request(Command.RUN, 1, payload)))
    return Status(resp.status)


def test_emulator_run_with_slots():
    """The protocol emulator's RUN reads SLOT and the LOAD/SAVE flags: saved sums come back on LOAD; a bad
    combination or slot answers BAD_ARGUMENT and computes nothing."""
    emu = ProtocolEmulator(CFG)
    emu.engine.write_a(0, np.ones((4, CFG.rows), dtype=np.int64))
    emu.engine.write_b(0, np.full((4, CFG.cols), 2, dtype=np.int64))
    assert _status(emu, run_args(0, 0, 4, RUN_CLEAR | RUN_SAVE, slot=2)) is Status.OK
    assert (emu.engine.psum[2] == 8).all() and (emu.engine.acc == 0).all()
    assert _status(emu, run_args(0, 0, 4, RUN_LOAD | RUN_SAVE, slot=5)) is Status.BAD_ARGUMENT
    assert _status(emu, run_args(0, 0, 4, RUN_LOAD | RUN_CLEAR, slot=2)) is Status.BAD_ARGUMENT
    assert _status(emu, run_args(0, 0, 2, RUN_LOAD | RUN_SAVE, slot=2)) is Status.OK
    assert (emu.engine.psum[2] == 12).all()
    plain = ProtocolEmulator(EngineConfig(rows=3, cols=2, wl=8, depth=16, b_depth=64, max_k_log2=10))
    assert _status(plain, run_args(0, 0, 4, RUN_CLEAR | RUN_SAVE)) is Status.BAD_ARGUMENT
