"""GemmEngine Verilog under cocotb (Verilator and Icarus): bit-exact, cycle-exact, stall-proof (engine_bench)."""

import pytest

from fxtrain.rtl.engine import GemmEngine
from fxtrain.sim.gemm import EngineConfig

# the third with B deeper than A (16); the last with a partial-sum memory of 3 slots (engine_bench.psum_scenario:
# chunk-outer K-split GEMMs interleaved over the slots, LOAD/SAVE edge cases, rejected LOAD/SAVE runs)
GEOMETRIES = [(2, 4, 1, None, 0), (4, 4, 2, None, 0), (3, 2, 3, 1024, 0), (3, 4, 5, None, 3)]


@pytest.mark.parametrize("rows,cols,seed,b_depth,psum_slots", GEOMETRIES)
def test_engine_bench(simulator, run_cocotb, rows, cols, seed, b_depth, psum_slots):
    """engine_bench: the scenario (K=1, K=depth, K-split, extreme operands, shift 0/32, both modes, rejected and
    random runs; or the partial-sum scenario) once with streams never stalling and once with 30 % random valid
    stalls on every source and a result sink ready 5 % of the time (drains wait for a bank): every output bit,
    every run's cycle count net of output stalls, and the counters equal the model's."""
    print(f"seed={seed}")
    params = {"rows": rows, "cols": cols, "wl": 8, "depth": 16, "max_k_log2": 8, "seed": seed, "runs": 10,
              "stall_probability": 0.3, "result_ready_probability": 0.05, "b_depth": b_depth,
              "psum_slots": psum_slots}
    config = EngineConfig(**{k: params[k] for k in ("rows", "cols", "wl", "depth", "max_k_log2", "b_depth",
                                                    "psum_slots")})
    assert run_cocotb(GemmEngine(config), "gemm_engine", "fxtrain.sim.benches.engine_bench", simulator, params) == 2


def test_pack_unpack_round_trip():
    """drivers.pack/unpack: nested struct/array/signed fields survive a round trip, the first field sits in the
    least significant bits, and out-of-range values raise naming the value."""
    from amaranth.hdl import signed, unsigned
    from amaranth.lib import data

    from fxtrain.sim.benches.drivers import pack, unpack

    layout = data.StructLayout({"addr": unsigned(3), "data": data.ArrayLayout(signed(4), 3), "flag": 1})
    value = {"addr": 5, "data": [-8, 7, -1], "flag": 1}
    bits = pack(layout, value)
    assert bits == 5 | (0x8 << 3) | (0x7 << 7) | (0xF << 11) | (1 << 15)
    assert unpack(layout, bits) == value
    assert pack(unsigned(8), 0xA5) == 0xA5 and unpack(signed(8), 0xFF) == -1
    with pytest.raises(ValueError, match="-9"):
        pack(layout, {"addr": 0, "data": [-9, 0, 0], "flag": 0})
    with pytest.raises(ValueError, match="bogus"):
        pack(layout, {"bogus": 1})
