# amaranth: UnusedElaboratable=no
"""cocotb bench of the MAC processing element read out through the rounder (``docs/numerics.md`` §5, §3).

Design: :class:`PEWithRounder`, a :class:`fxtrain.rtl.pe.MACProcessingElement` whose ``acc`` feeds a
:class:`fxtrain.rtl.rounder.StochasticRounder` (no rounding is duplicated here). The checks are
:func:`fxtrain.sim.benches.block_checks.check_pe`: every PE output of every cycle against
:class:`fxtrain.sim.pe_model.PECycleModel`, exact dot products at their readout cycles, and the rounder's
outputs against :func:`fxtrain.sim.rounding.round_shift`.

Bench parameters (per parameter set, :func:`fxtrain.sim.benches.block_checks.bench_sections` ``"pe"``, plus
``prefix`` when the design is a member of a larger top): ``wl``, ``max_k`` (sets
``acc_width = accumulator_width(wl, max_k)``), ``shift_max``, ``seed``, ``runs``, optional ``coverage_out`` (a JSON file receiving ``check_pe``'s coverage counts).

Members
-------
PEWithRounder
    The bench design (also used by the Amaranth-simulator tests).
"""

from __future__ import annotations

import json

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...rtl.pe import MACProcessingElement
from ...rtl.rounder import StochasticRounder
from ..lfsr import LANE_WIDTH
from ..pe import accumulator_width
from .block_checks import CocotbPorts, bench_sections, check_pe, pe_program, start_bench

try:
    import cocotb
except ImportError:  # the design stays importable without cocotb
    cocotb = None

__all__ = ["PEWithRounder"]


class PEWithRounder(wiring.Component):
    """Bench design: a PE whose accumulator is read through a rounder.

    Parameters
    ----------
    wl : int
        Operand and result word length.
    max_k : int
        Largest K; ``acc_width = accumulator_width(wl, max_k)``.
    shift_max : int
        The rounder's largest shift.
    multiplier : str
        The PE's multiplier kind (:class:`fxtrain.rtl.multiplier.RegisteredMultiplier`; ``"mult18x18d"``
        needs :func:`fxtrain.sim.ecp5_models.with_ecp5_models` on the Verilog).

    Members
    -------
    a_in, b_in, in_valid, in_clear, a_out, b_out, out_valid, out_clear, acc, shift_in, shift_en
        The PE's ports.
    r_valid, r_rand, r_shift, r_mode : In
        The rounder's ``i_valid``, ``rand``, ``shift``, ``mode`` (its ``acc`` is the PE's ``acc``).
    r_out_valid, r_out, r_sat : Out
        The rounder's ``o_valid``, ``out``, ``sat``.
    wl, max_k, acc_width, latency, rounder_latency : int
        Parameters and the two blocks' latencies.
    """

    def __init__(self, wl, max_k, shift_max, multiplier="auto"):
        self.wl, self.max_k = wl, max_k
        self.acc_width = accumulator_width(wl, max_k)
        self.pe = MACProcessingElement(wl, self.acc_width, multiplier)
        self.rounder = StochasticRounder(wl, self.acc_width, shift_max=shift_max, rand_width=LANE_WIDTH)
        self.latency, self.rounder_latency = self.pe.latency, self.rounder.latency
        super().__init__({
            "a_in": In(signed(wl)), "b_in": In(signed(wl)), "in_valid": In(1), "in_clear": In(1),
            "a_out": Out(signed(wl)), "b_out": Out(signed(wl)), "out_valid": Out(1), "out_clear": Out(1),
            "acc": Out(signed(self.acc_width)), "shift_in": In(signed(self.acc_width)), "shift_en": In(1),
            "r_valid": In(1), "r_rand": In(LANE_WIDTH), "r_shift": In(range(shift_max + 1)), "r_mode": In(1),
            "r_out_valid": Out(1), "r_out": Out(signed(wl)), "r_sat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        m.submodules.rounder = rounder = self.rounder
        for name in ("a_in", "b_in", "in_valid", "in_clear", "shift_in", "shift_en"):
            m.d.comb += getattr(pe, name).eq(getattr(self, name))
        for name in ("a_out", "b_out", "out_valid", "out_clear", "acc"):
            m.d.comb += getattr(self, name).eq(getattr(pe, name))
        m.d.comb += [
            rounder.acc.eq(pe.acc), rounder.i_valid.eq(self.r_valid), rounder.rand.eq(self.r_rand),
            rounder.shift.eq(self.r_shift), rounder.mode.eq(self.r_mode),
            self.r_out_valid.eq(rounder.o_valid), self.r_out.eq(rounder.out), self.r_sat.eq(rounder.sat),
        ]
        return m


if cocotb is not None:
    @cocotb.test()
    async def pe_matches_model(dut):
        """Dot-product runs (K=1, K=max_k, most negative operands, gaps, drains, overlapping readouts): every PE
        output every cycle equals the cycle model, acc equals the exact dot product, readouts equal round_shift."""
        instances = []
        for params in bench_sections("pe"):
            harness = PEWithRounder(params["wl"], params["max_k"], params["shift_max"],
                                    params.get("multiplier", "auto"))
            instances.append((params, harness, CocotbPorts(dut, harness, params.get("prefix", ""))))
        await start_bench(dut, [ports for _, _, ports in instances])
        for params, harness, ports in instances:
            dut._log.info(f"pe bench seed={params['seed']} wl={params['wl']} max_k={params['max_k']}")
            program, sums = pe_program(params["wl"], harness.acc_width, params["max_k"], params["shift_max"],
                                       params["seed"], params["runs"])
            coverage = await check_pe(ports, harness, program, sums)
            assert coverage["readouts"] >= params["runs"], f"{coverage} for {params['runs']} runs"
            dut._log.info(f"{len(program)} cycles bit-exact; coverage {coverage}")
            if "coverage_out" in params:
                with open(params["coverage_out"], "w") as f:
                    json.dump(dict(coverage, cycles=len(program)), f)
