# amaranth: UnusedElaboratable=no
"""cocotb bench of the rounder, alone and fed by a hardware LFSR lane (``docs/numerics.md`` §3, §4, §5).

Design: :class:`RounderWithLane`, a :class:`fxtrain.rtl.rounder.StochasticRounder` whose random word is either
the ``rand_in`` port or the ``next_state`` of a :class:`fxtrain.rtl.lfsr.LFSR` lane that advances with every
valid rounding (advance-then-use, as in the engine). The checks are
:func:`fxtrain.sim.benches.block_checks.check_rounder`: every output of every cycle against
:func:`fxtrain.sim.rounding.round_shift`, at the rounder's stated latency.

Bench parameters (per parameter set, :func:`fxtrain.sim.benches.block_checks.bench_sections` ``"rounder"``,
plus ``prefix`` when the design is a member of a larger top): ``wl``, ``acc_width``, ``shift_max``, ``seed``,
``count`` (random cases), and for the statistics run ``stat_acc``, ``stat_shift``, ``stat_count``, ``stat_seed`` and ``out`` (a JSON file receiving
the rounded words of the statistics run, ``{"stochastic": [...], "nearest": [...]}``); optional
``coverage_out``: a JSON file receiving the coverage of the random/adversarial run (``rounder_coverage``).

Members
-------
RounderWithLane
    The bench design (also used by the Amaranth-simulator tests).
"""

from __future__ import annotations

import json

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...rtl.lfsr import LFSR
from ...rtl.rounder import StochasticRounder
from ..lfsr import LANE_WIDTH
from .block_checks import (CocotbPorts, bench_sections, check_rounder, rounder_coverage, rounder_program,
                           start_bench, statistics_program)

try:
    import cocotb
except ImportError:  # the design stays importable without cocotb
    cocotb = None

__all__ = ["RounderWithLane"]


class RounderWithLane(wiring.Component):
    """Bench design: a rounder whose ``rand`` comes from ``rand_in`` or from its own 32-bit LFSR lane.

    ``rand = use_lane ? lane.next_state : rand_in``; the lane advances when ``i_valid & use_lane`` and loads
    ``seed`` when ``load``. Latency (``latency``) is the rounder's, plus ``shift_setup``.

    With ``shift_setup = 1`` the rounder takes ``shift``/``mode`` one cycle before its input; the harness then
    delays ``i_valid``, ``acc`` and ``rand`` by one register (and not ``shift``/``mode``), so at the harness
    ports all five are again sampled in one cycle and the harness checks that the rounder rounds each input with
    the parameters presented exactly one cycle before it, whatever they were in the other cycles.

    Parameters
    ----------
    wl, acc_width, shift_max
        As for :class:`fxtrain.rtl.rounder.StochasticRounder`.
    reset_seed : int
        Lane state after reset.
    shift_setup : int
        The rounder's ``shift_setup`` (0 or 1).

    Members
    -------
    i_valid, acc, shift, mode, o_valid, out, sat
        The rounder's ports.
    rand_in : In(32)
        Random word used when ``use_lane`` is low.
    use_lane : In(1)
        Take the lane's ``next_state`` as the random word (and advance the lane on valid inputs).
    seed : In(32), load : In(1)
        The lane's seed port.
    latency, lane_width, reset_seed, wl, acc_width, shift_max, shift_setup : int
        Parameters.
    """

    lane_width = LANE_WIDTH

    def __init__(self, wl, acc_width, shift_max, reset_seed=1, shift_setup=0):
        self.rounder = StochasticRounder(wl, acc_width, shift_max=shift_max, rand_width=LANE_WIDTH,
                                         shift_setup=shift_setup)
        self.lane = LFSR(LANE_WIDTH, reset_seed=reset_seed)
        self.shift_setup = shift_setup
        self.latency = self.rounder.latency + shift_setup
        self.wl, self.acc_width, self.shift_max, self.reset_seed = wl, acc_width, shift_max, reset_seed
        super().__init__({
            "i_valid": In(1), "acc": In(signed(acc_width)), "rand_in": In(LANE_WIDTH), "use_lane": In(1),
            "shift": In(range(shift_max + 1)), "mode": In(1), "seed": In(LANE_WIDTH), "load": In(1),
            "o_valid": Out(1), "out": Out(signed(wl)), "sat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rounder = rounder = self.rounder
        m.submodules.lane = lane = self.lane
        rand = Mux(self.use_lane, lane.next_state, self.rand_in)
        data = [(rounder.i_valid, self.i_valid), (rounder.acc, self.acc), (rounder.rand, rand)]
        domain = m.d.sync if self.shift_setup else m.d.comb     # the one-cycle delay of the data (see above)
        domain += [port.eq(value) for port, value in data]
        m.d.comb += [
            lane.seed.eq(self.seed), lane.load.eq(self.load), lane.advance.eq(self.i_valid & self.use_lane),
            rounder.shift.eq(self.shift), rounder.mode.eq(self.mode),
            self.o_valid.eq(rounder.o_valid), self.out.eq(rounder.out), self.sat.eq(rounder.sat),
        ]
        return m


def _instances(dut):
    """``(params, design, ports)`` per parameter set of this run."""
    out = []
    for params in bench_sections("rounder"):
        harness = RounderWithLane(params["wl"], params["acc_width"], params["shift_max"])
        out.append((params, harness, CocotbPorts(dut, harness, params.get("prefix", ""))))
    return out


if cocotb is not None:
    @cocotb.test()
    async def rounder_matches_model(dut):
        """Adversarial and random inputs every cycle, idle gaps, both modes: out/sat/o_valid equal round_shift."""
        instances = _instances(dut)
        await start_bench(dut, [ports for _, _, ports in instances])
        for params, harness, ports in instances:
            dut._log.info(f"rounder bench seed={params['seed']} wl={params['wl']} "
                          f"acc_width={params['acc_width']} shift_max={params['shift_max']}")
            program = rounder_program(params["wl"], params["acc_width"], params["shift_max"], params["seed"],
                                      params["count"])
            results = await check_rounder(ports, harness, program)
            coverage = rounder_coverage(results)
            dut._log.info(f"{len(results)} roundings bit-exact; coverage {coverage}")
            if "coverage_out" in params:
                with open(params["coverage_out"], "w") as f:
                    json.dump(dict(coverage, count=len(results)), f)

    @cocotb.test()
    async def lane_fed_rounding_statistics(dut):
        """A constant acc rounded with the hardware lane's words in both modes; every output equals the model,
        and the outputs are written to ``params['out']`` for the bias test."""
        instances = _instances(dut)
        await start_bench(dut, [ports for _, _, ports in instances])
        for params, harness, ports in instances:
            program = statistics_program(params["stat_acc"], params["stat_shift"], params["stat_count"],
                                         params["stat_seed"])
            results = await check_rounder(ports, harness, program)
            with open(params["out"], "w") as f:
                json.dump({"stochastic": [r[1] for r in results if r[0] == 1],
                           "nearest": [r[1] for r in results if r[0] == 0]}, f)
