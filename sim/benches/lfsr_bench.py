"""cocotb bench of the LFSR lanes (``docs/numerics.md`` §4).

Design: :class:`fxtrain.rtl.lfsr.LFSRLanes`. The check is
:func:`fxtrain.sim.benches.block_checks.check_lfsr_lanes`: ``state`` and ``next_state`` of every lane in every
cycle against the golden leap map, through random per-lane advances and seed loads (zero loads included, which
must be ignored), then a long run of lane 0 advancing every cycle whose words are written to ``params['out']``
(JSON list) for the correlation test.

Bench parameters: ``n``, ``width``, ``leap``, ``seed``, ``cycles`` (random phase), ``words`` (capture phase),
``out``.
"""

from __future__ import annotations

import json

from ...rtl.lfsr import LFSRLanes
from ..runner import bench_params
from .block_checks import CocotbPorts, check_lfsr_lanes, lfsr_program

try:
    import cocotb
except ImportError:
    cocotb = None

__all__ = []

if cocotb is not None:
    @cocotb.test()
    async def lanes_match_model(dut):
        """Random advances and seed loads (zero loads ignored), then a capture run: state/next_state equal the
        golden model every cycle; the captured words go to ``params['out']``."""
        params = bench_params()
        lanes = LFSRLanes(params["n"], params["width"], leap=params["leap"])
        dut._log.info(f"lfsr bench seed={params['seed']} n={params['n']} width={params['width']} "
                      f"leap={params['leap']}")
        ports = CocotbPorts(dut, lanes)
        await ports.start()
        program = lfsr_program(params["n"], params["width"], params["seed"], params["cycles"], params["words"])
        words = await check_lfsr_lanes(ports, lanes, program, lanes.reset_seed)
        assert len(words) >= params["words"]
        with open(params["out"], "w") as f:
            json.dump(words[-params["words"]:], f)
