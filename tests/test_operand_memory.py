# amaranth: UnusedElaboratable=no
"""The B operand memory (``rtl/operand_memory.py``): the iCE40 SPRAM version that goes into the iCEBreaker
bitstream gives the engine every output bit and cycle of the golden model, like the generic memory, under
Verilator and Icarus with the behavioural SB_SPRAM256KA model of ``sim/ice40_models.py``; the platform selects
it, and a B memory that needs more SPRAMs than the UP5K has is refused before any build."""

import pytest
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_45F_Platform

from fxtrain.boards.targets import get_target
from fxtrain.rtl.engine import GemmEngine
from fxtrain.rtl.operand_memory import OperandMemory, memory_kind, spram_count
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.ice40_models import with_ice40_models



def test_platform_selects_the_b_memory(platform_instances):
    """'auto' is SPRAM on iCE40 for a memory of 2048 entries or more, block RAM (generic) on ECP5, in simulation
    and for small iCE40 memories; the iCEBreaker's 4 x 2 engine (B 32 bits wide) instantiates all 4
    SB_SPRAM256KA for its default 32K B entries (2 banks) and 2 for 16K, with power on and every nibble written;
    a bad kind, width or depth is refused, named."""
    assert memory_kind("auto", ICEBreakerPlatform(), 16384) == "spram"
    assert memory_kind("auto", ICEBreakerPlatform(), 1024) == "generic"
    assert memory_kind("auto", ULX3S_45F_Platform(), 16384) == "generic"
    assert memory_kind("auto", None, 16384) == "generic"
    assert (spram_count(32, 16384), spram_count(32, 32768), spram_count(16, 2048), spram_count(48, 16384)) \
        == (2, 4, 1, 3)
    target = get_target("icebreaker")
    config = target.config
    assert (config.rows, config.cols, config.wl, config.depth, config.b_depth) == (4, 2, 16, 512, 32768)
    ice = [i for i in platform_instances(GemmEngine(config), ICEBreakerPlatform())
           if i.type == "SB_SPRAM256KA"]
    assert len(ice) == 4
    half = EngineConfig(rows=4, cols=2, wl=16, depth=512, b_depth=16384)
    assert [i.type for i in platform_instances(GemmEngine(half), ICEBreakerPlatform())] == ["SB_SPRAM256KA"] * 2
    for inst in ice:
        ports = {name: value for name, (value, _) in inst.ports.items()}
        assert repr(ports["POWEROFF"]) == "(const 1'd1)" and repr(ports["MASKWREN"]) == "(const 4'd15)"
        assert repr(ports["SLEEP"]) == "(const 1'd0)" and repr(ports["STANDBY"]) == "(const 1'd0)"
    ecp5 = platform_instances(GemmEngine(config), ULX3S_45F_Platform())
    assert not [i for i in ecp5 if i.type == "SB_SPRAM256KA"]
    with pytest.raises(ValueError, match="'ebr'"):
        OperandMemory(32, 1024, "ebr")
    with pytest.raises(ValueError, match="'bram'"):
        GemmEngine(config, b_memory="bram")
    with pytest.raises(ValueError, match="not 1000"):
        OperandMemory(32, 1000)


def test_b_depth_is_validated_up_front_with_the_bad_value():
    """EngineConfig.b_depth: a power of two from depth to 65536 (None: depth); a board's B memory must fit its
    part (iCE40UP5K: 4 SPRAMs), raising --depth above the board's b_depth raises b_depth with it, and a wider
    iCE40 geometry without an explicit b_depth gets one that fits."""
    assert EngineConfig(depth=64).b_depth == 64
    assert EngineConfig(depth=64, b_depth=None) == EngineConfig(depth=64, b_depth=64)
    for bad in (256, 1000, 131072, 512.0, True):
        with pytest.raises(ValueError, match=f"b_depth must be a power of two from the A depth 512 to 65536, "
                                             f"not {bad!r}"):
            EngineConfig(depth=512, b_depth=bad)
    ice = get_target("icebreaker")
    assert ice.with_options(b_depth=2048).config.b_depth == 2048             # 1 SPRAM
    with pytest.raises(ValueError, match=r"b_depth 65536 x 32 bits .* needs 8 SB_SPRAM256KA; the iCE40UP5K has 4"):
        ice.with_options(b_depth=65536)
    with pytest.raises(ValueError, match="needs 6 SB_SPRAM256KA"):
        ice.with_options(cols=3, b_depth=32768)
    # without an explicit b_depth a wider geometry gets the largest B depth whose SPRAMs fit, or block RAM
    assert ice.with_options(rows=3, cols=3).config.b_depth == 16384                # 3 SPRAMs of 48 bits
    assert ice.with_options(rows=1, cols=8).config.b_depth == 512                  # 8 x 16 bits: no SPRAM bank fits
    ecp5 = get_target("ulx3s-12f")
    assert ecp5.config.b_depth == 8192
    assert ecp5.with_options(depth=16384).config.b_depth == 16384
    assert ice.with_options(depth=1024).config.b_depth == 32768


@pytest.mark.parametrize("rows,cols,wl,b_depth,seed", [(2, 2, 8, 32768, 5), (3, 4, 8, 64, 6)])
def test_spram_engine_bench(simulator, run_cocotb, rows, cols, wl, b_depth, seed):
    """The whole GemmEngine with its B memory in SB_SPRAM256KA (behavioural model): engine_bench's scenario (K = 1
    at B's last entry, full-depth runs above A's range and across B's middle, which for 32K entries of 16 bits
    is the boundary between two SPRAM banks, K-splits, extreme operands, both modes, rejected runs, random runs,
    random stalls with B writes offered during runs) gives every output bit, every run's cycle count and the
    counters of the model."""
    print(f"seed={seed}")
    params = {"rows": rows, "cols": cols, "wl": wl, "depth": 16, "max_k_log2": 8, "b_depth": b_depth,
              "seed": seed, "runs": 10, "stall_probability": 0.3, "result_ready_probability": 0.05}
    config = EngineConfig(rows=rows, cols=cols, wl=wl, depth=16, max_k_log2=8, b_depth=b_depth)
    from amaranth.back import verilog
    text = with_ice40_models(verilog.convert(GemmEngine(config, b_memory="spram"), name="spram_engine",
                                             emit_src=False))
    assert text.count("SB_SPRAM256KA #(") + text.count("SB_SPRAM256KA ") >= spram_count(cols * wl, b_depth)
    assert run_cocotb(text, "spram_engine", "fxtrain.sim.benches.engine_bench", simulator, params) == 2
