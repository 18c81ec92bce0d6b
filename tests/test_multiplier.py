# amaranth: UnusedElaboratable=no
"""The PE's registered multiplier (``rtl/multiplier.py``): the ECP5 MULT18X18D version that goes into the ECP5
bitstreams is bit- and cycle-exact against the same golden models as the generic one (``docs/numerics.md``
§5), under Verilator and Icarus with the behavioural primitive model of ``sim/ecp5_models.py``; the platform
selects it."""

import pytest
from amaranth.back import verilog
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_45F_Platform

from fxtrain.rtl.engine import GemmEngine
from fxtrain.rtl.multiplier import RegisteredMultiplier, multiplier_kind
from fxtrain.rtl.pe import MACProcessingElement
from fxtrain.sim.benches.pe_bench import PEWithRounder
from fxtrain.sim.ecp5_models import with_ecp5_models
from fxtrain.sim.gemm import EngineConfig

SEED = 16016



def _dsp_verilog(design, name):
    return with_ecp5_models(verilog.convert(design, name=name, emit_src=False))


def test_platform_selects_the_multiplier(platform_instances):
    """'auto' is the MULT18X18D (output register on, input and pipeline registers off) on an ECP5 platform and
    the generic product register in simulation and on iCE40; an unknown kind is refused, naming it."""
    assert multiplier_kind("auto", ULX3S_45F_Platform()) == "mult18x18d"
    assert multiplier_kind("auto", ICEBreakerPlatform()) == "generic"
    assert multiplier_kind("auto", None) == "generic"
    ecp5 = platform_instances(MACProcessingElement(16, 52), ULX3S_45F_Platform())
    assert [i.type for i in ecp5] == ["MULT18X18D"]
    params = ecp5[0].parameters
    assert (params["REG_OUTPUT_CLK"], params["REG_INPUTA_CLK"], params["REG_INPUTB_CLK"],
            params["REG_PIPELINE_CLK"]) == ("CLK0", "NONE", "NONE", "NONE")
    assert platform_instances(MACProcessingElement(16, 52), ICEBreakerPlatform()) == []
    with pytest.raises(ValueError, match="'dsp48'"):
        RegisteredMultiplier(16, "dsp48")
    with pytest.raises(ValueError, match="19"):
        RegisteredMultiplier(19)


def test_dsp_pe_bench(simulator, run_cocotb):
    """§5: the PE with the MULT18X18D multiplier, as built for ECP5, equals PECycleModel on every output in every
    cycle and holds the exact dot product (K = 1, K = max_k with the most negative operands, gaps, drains),
    read out through the rounder (wl 16, max_k 16, and wl 8 where the operands are sign-extended further)."""
    print(f"seed={SEED}")
    for wl, max_k, shift_max in ((16, 16, 32), (8, 4, 12)):
        harness = PEWithRounder(wl, max_k, shift_max, multiplier="mult18x18d")
        params = {"wl": wl, "max_k": max_k, "shift_max": shift_max, "seed": SEED, "runs": 200}
        ran = run_cocotb(_dsp_verilog(harness, f"dsp_pe_wl{wl}"), f"dsp_pe_wl{wl}",
                         "fxtrain.sim.benches.pe_bench", simulator, params)
        assert ran == 1


def test_dsp_engine_bench(simulator, run_cocotb):
    """The whole GemmEngine with every PE on the MULT18X18D multiplier: engine_bench's scenario (K = 1, K = depth,
    K-splits, extreme operands, both rounding modes, rejected runs, random stalls) gives every output bit, every
    run's cycle count and the counters of the model, so the DSP version keeps the cycle formula."""
    seed = 7
    print(f"seed={seed}")
    params = {"rows": 3, "cols": 2, "wl": 8, "depth": 16, "max_k_log2": 8, "seed": seed, "runs": 10,
              "stall_probability": 0.3, "result_ready_probability": 0.05}
    config = EngineConfig(**{k: params[k] for k in ("rows", "cols", "wl", "depth", "max_k_log2")})
    text = _dsp_verilog(GemmEngine(config, multiplier="mult18x18d"), "dsp_engine")
    assert text.count("MULT18X18D #(") == 6
    assert run_cocotb(text, "dsp_engine", "fxtrain.sim.benches.engine_bench", simulator, params) == 2



def test_synth_ecp5_puts_the_product_register_in_the_dsp(tmp_path):
    """Yosys synth_ecp5 of one PE: the MULT18X18D version keeps its registered MULT18X18D and uses exactly
    2*wl fewer fabric flip-flops than the generic one (whose product register stays in the fabric, because
    synth_ecp5 maps a multiply to an unregistered MULT18X18D); both use one DSP block."""
    from amaranth.back import rtlil

    from fxtrain.boards import toolchain

    try:
        env = toolchain.toolchain_env("ecp5")
    except toolchain.ToolchainError as error:
        pytest.skip(str(error))
    import re
    import subprocess

    wl, counts = 16, {}
    for kind in ("generic", "mult18x18d"):
        (tmp_path / f"{kind}.il").write_text(rtlil.convert(MACProcessingElement(wl, 52, kind), name="pe"))
        subprocess.run([env["YOSYS"], "-q", "-p", f"read_rtlil {kind}.il; synth_ecp5 -top pe; "
                        f"tee -q -o {kind}.txt stat; write_json {kind}.json"], cwd=tmp_path, check=True, env=env)
        stat = (tmp_path / f"{kind}.txt").read_text()
        counts[kind] = {cell: int(re.search(rf"(\d+)\s+{cell}\b", stat).group(1)) for cell in ("TRELLIS_FF",
                                                                                          "MULT18X18D")}
    assert counts["generic"]["MULT18X18D"] == counts["mult18x18d"]["MULT18X18D"] == 1
    assert counts["generic"]["TRELLIS_FF"] - counts["mult18x18d"]["TRELLIS_FF"] == 2 * wl
    assert '"REG_OUTPUT_CLK": "CLK0"' in (tmp_path / "mult18x18d.json").read_text()
