"""RTL simulation speed: the free-running Verilator harness (``sim:verilator``) vs. the cocotb byte bridge under
Verilator (``sim:verilator-cocotb``), in one run, on the same SoC and the same GEMMs.

Both run the same seeded GEMMs (checked bit for bit against ``sim.gemm.tiled_gemm``) through ``Device``. For
each: wall time of the workload, clock cycles simulated and cycles per second. The cocotb bridge clocks the SoC
without pause from Python, so its rate is cycles / wall time of the session; the harness clocks only while the
SoC has work (it blocks when idle), so its rate is cycles / time spent simulating, as reported by the harness.

    nice -n 15 .venv/bin/python bench/sim_speed.py [--gemms 6] [--m 16 --k 64 --n 8]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

from fxtrain.host.device_spec import open_device
from fxtrain.sim.gemm import EngineConfig, tiled_gemm
from fxtrain.sim.lfsr import lane_seeds

SIM_CONFIG = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12)


def workload(spec, args, build_root):
    """``(wall_s, cycles, cycles_per_s, equal)`` of ``args.gemms`` seeded GEMMs through ``spec``."""
    rng = np.random.default_rng(args.seed)
    device = open_device(spec, config=SIM_CONFIG, build_root=build_root, timeout=600.0)
    transport = device.transport
    device.seed(args.seed)
    lanes = lane_seeds(args.seed, SIM_CONFIG.lanes)
    equal = True
    start = time.perf_counter()
    if spec == "sim:verilator":
        transport.sync()
        cycles0, run0 = transport.cycles, transport.run_seconds
    for i in range(args.gemms):
        a = rng.integers(-(1 << 15), 1 << 15, (args.m, args.k))
        b = rng.integers(-(1 << 15), 1 << 15, (args.k, args.n))
        got = device.gemm(a, b, 14, "stochastic")
        want = tiled_gemm(SIM_CONFIG, a, b, 14, "stochastic", lanes)
        lanes = want.lane_state
        equal &= bool((got.c == want.c).all() and (got.saturated == want.saturated).all())
    wall = time.perf_counter() - start
    if spec == "sim:verilator":
        transport.sync()
        cycles, running = transport.cycles - cycles0, transport.run_seconds - run0
        device.close()
        return wall, cycles, cycles / running, equal
    session_start = start
    device.close()                                     # the cocotb server logs its cycle count when it ends
    session = time.perf_counter() - session_start
    # cocotb writes its log to <build>/test-<server pid>.log (fxtrain.sim.runner.run_bench)
    logs = list(Path(build_root).glob(f"fxtrain_soc-verilator-*/test-{transport.process.pid}.log"))
    served = re.findall(r"served \d+ bytes over (\d+) cycles", logs[0].read_text()) if logs else []
    if not served:
        raise RuntimeError(f"no cycle count in the cocotb log {logs}")
    cycles = int(served[-1])
    return wall, cycles, cycles / session, equal


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gemms", type=int, default=6)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--build-root", default=".sim_build")
    args = parser.parse_args(argv)
    rows = []
    for spec in ("sim:verilator", "sim:verilator-cocotb"):
        rows.append((spec, *workload(spec, args, args.build_root)))
    base = rows[1]
    print(f"{args.gemms} GEMMs ({args.m}x{args.k}) @ ({args.k}x{args.n}), stochastic, 2x2 engine of depth 32, "
          f"seed {args.seed}\n")
    print("| transport | workload wall s | cycles simulated | cycles / s | speed vs cocotb | bit-exact |")
    print("|---|---:|---:|---:|---:|---|")
    for spec, wall, cycles, rate, equal in rows:
        print(f"| `{spec}` | {wall:.2f} | {cycles:,} | {rate:,.0f} | {rate / base[3]:.0f}x "
              f"(workload {base[1] / wall:.0f}x) | {'yes' if equal else 'NO'} |")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
