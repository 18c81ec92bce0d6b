# amaranth: UnusedElaboratable=no
"""cocotb bench of the LFSR lanes (``docs/numerics.md`` §4).

Design: :class:`fxtrain.rtl.lfsr.LFSRLanes`. The check is
:func:`fxtrain.sim.benches.block_checks.check_lfsr_lanes`: ``state`` and ``next_state`` of every lane in every
cycle against the golden leap map, through random per-lane advances and seed loads (zero loads included, which
must be ignored), then a long run of lane 0 advancing every cycle whose words are written to ``params['out']``
(JSON list) for the correlation test.

Bench parameters (per parameter set, :func:`fxtrain.sim.benches.block_checks.bench_sections` ``"lfsr"``):
``n``, ``width``, ``leap``, ``seed``, ``cycles`` (random phase), ``words`` (capture phase), ``out``, and
``prefix`` when the design is a member of a larger top.
"""

from __future__ import annotations

import json

from ...rtl.lfsr import LFSRLanes
from .block_checks import CocotbPorts, bench_sections, check_lfsr_lanes, lfsr_program, start_bench

try:
    import cocotb
except ImportError:
    cocotb = None

__all__ = []

def _instances(dut):
    """``(params, design, ports)`` per parameter set of this run."""
    out = []
    for params in bench_sections("lfsr"):
        lanes = LFSRLanes(params["n"], params["width"], leap=params["leap"])
        out.append((params, lanes, CocotbPorts(dut, lanes, params.get("prefix", ""))))
    return out


if cocotb is not None:
    @cocotb.test()
    async def lanes_match_model(dut):
        """Random advances and seed loads (zero loads ignored), then a capture run: state/next_state equal the
        golden model every cycle; the captured words go to ``params['out']``."""
        instances = _instances(dut)
        await start_bench(dut, [ports for _, _, ports in instances])
        for params, lanes, ports in instances:
            dut._log.info(f"lfsr bench seed={params['seed']} n={params['n']} width={params['width']} "
                          f"leap={params['leap']}")
            program = lfsr_program(params["n"], params["width"], params["seed"], params["cycles"],
                                   params["words"])
            words = await check_lfsr_lanes(ports, lanes, program, lanes.reset_seed)
            assert len(words) >= params["words"]
            with open(params["out"], "w") as f:
                json.dump(words[-params["words"]:], f)
