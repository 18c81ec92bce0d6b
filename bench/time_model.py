"""Verify the time-per-epoch model (``host/timemodel.py``) against what the RTL, the driver and the host measure.

1. Engine cycles: every GEMM of one LeNet training step (batch scaled down, ``--cycles-batch``) is replayed into
   its engine runs; the runs are played on the ``GemmEngine`` RTL in the Amaranth simulator in the planner's order
   and the RTL's own ``busy`` counter is compared with the prediction (goal: exact). The same for the K-split GEMMs
   that a board with a partial-sum memory (``--psum-board``, ``--psum-batch``) plays chunk-outer, so the LOAD/SAVE
   cycle terms are checked too (``--cycles-only``: these two checks alone).
2. Bytes on the wire: one LeNet training step goes through the host driver (``Device``) over a transport
   (``emu``: the protocol emulator; ``sim:verilator``: the SoC RTL, when ``--sim`` is given); bytes both ways
   and exchanges counted by the driver are compared with the prediction (goal: exact). With ``sim:verilator``
   the RTL's ``busy`` counter is compared too.
3. Host time: the host model is fitted to LeNet steps on the exact emulator at two batch sizes and predicts two
   others; the prediction is compared with the measured wall-clock minus the time inside ``backend.gemm``
   (goal: within 10 %).
4. Per-board epoch prediction for WL 16 and WL 8 with the share of time on the link.

Writes a markdown report to stdout and, with ``--doc docs/time-model.md``, between the markers
``<!-- bench:time_model -->`` and ``<!-- /bench:time_model -->`` of that file.

Usage::

    python bench/time_model.py --doc docs/time-model.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from fxtrain.boards.targets import TARGETS, get_target
from fxtrain.host import timemodel
from fxtrain.host.estimate_cli import format_seconds
from fxtrain.sim.benches.engine_bench import busy_cycles_in_amaranth_sim, schedule_runs
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.gemm_plan import plan_gemm
from fxtrain.sim.planner import CommandPlanner

MARK_BEGIN = "<!-- bench:time_model -->"
MARK_END = "<!-- /bench:time_model -->"


def check_cycles(board, batch, out, psum_only=False):
    """Every GEMM of one LeNet training step (``psum_only``: only the K-splits played chunk-outer through the
    partial-sum memory) played on ``GemmEngine`` in the Amaranth simulator, runs in the planner's order; the
    RTL's busy counter vs the time model's cycles."""
    config = get_target(board).config
    if psum_only and not config.psum_slots:
        raise SystemExit(f"Board {board} has no partial-sum memory (psum_slots = 0)")
    layers = timemodel.lenet_layers()
    replay = timemodel.DriverReplay(config)
    planner = CommandPlanner(config)
    if psum_only:
        out.append(f"\n### Engine cycles of the partial-sum (LOAD/SAVE) runs: predicted vs the RTL's busy counter\n\n"
                   f"Board geometry `{board}` ({config.rows}x{config.cols}, depth {config.depth}, WL {config.wl}, "
                   f"{config.psum_slots} partial-sum slots); the GEMMs of one LeNet training step at batch {batch} "
                   f"that are K-split (K > depth) and so go chunk-outer (CLEAR+SAVE, LOAD+SAVE, LOAD+DRAIN runs over "
                   f"the slots), each played on `GemmEngine` in the Amaranth simulator in the planner's order.\n")
    else:
        out.append(f"### Engine cycles: predicted vs the RTL's busy counter\n\nBoard geometry `{board}` "
                   f"({config.rows}x{config.cols}, depth {config.depth}, WL {config.wl}); one LeNet training step at "
                   f"batch {batch} (scaled down from 64: the Amaranth simulator runs ~10^4 cycles/s; cycles per tile "
                   f"do not depend on the batch, the number of tiles grows linearly with it). Each GEMM's runs (a "
                   f"RUN_TILES as its tiles' runs) are played on `GemmEngine` in the Amaranth simulator in the "
                   f"planner's order.\n")
    out.append("| layer | GEMM | M x K x N | tiles | runs | LOAD/SAVE runs | predicted cycles | RTL busy counter "
               "| equal |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|---|")
    all_equal = True
    for g in timemodel.training_gemms(layers, batch):
        if psum_only and not planner.uses_psum(plan_gemm(config, g.m, g.k, g.n)):
            continue
        traffic = replay.gemm(g.m, g.k, g.n, g.rounding, (g.layer, g.kind) if g.b_weights else None)
        runs = schedule_runs(config, g.m, g.k, g.n, g.rounding)
        predicted = traffic.engine_cycles(config)
        measured = busy_cycles_in_amaranth_sim(config, runs)
        all_equal &= predicted == measured
        out.append(f"| {g.layer} | {g.kind} | {g.m} x {g.k} x {g.n} | {traffic.tiles} | {len(runs)} | "
                   f"{sum(traffic.psum_runs.values())} | {predicted:,} | {measured:,} | "
                   f"{'yes' if predicted == measured else '**NO**'} |")
    return all_equal


def check_bytes(spec, board, batch, out, sim_config=None):
    """One LeNet step through the driver on ``spec`` after a warm-up step; bytes, exchanges, busy cycles."""
    from fxtrain.host.device_spec import open_device
    from fxtrain.host.layers import FixedConfig

    config = sim_config or get_target(board).config
    options = {"build_root": ".sim_build"} if spec.startswith("sim:") else {}
    start = time.perf_counter()
    with open_device(spec, config=config, **options) as device:
        timemodel.time_training_steps(device, batch, steps=0, warmup=1)
        before = dict(device.counters)
        busy_before = device.device_counters()["busy"]
        before_counters = dict(device.counters)       # READ_COUNTERS is not part of the step
        timemodel.time_training_steps(device, batch, steps=1, warmup=0)
        sent = device.counters["bytes_sent"] - before_counters["bytes_sent"]
        received = device.counters["bytes_received"] - before_counters["bytes_received"]
        frames = device.counters["frames"] - before_counters["frames"]
        busy = device.device_counters()["busy"] - busy_before
    del before
    fixed = FixedConfig(wl=config.wl)
    rounding = {"forward": (fixed.shifts["forward"], fixed.rounding),
                "input_grad": (fixed.shifts["grad_input"], fixed.rounding),
                "weight_grad": (fixed.shifts["grad_weight"], fixed.rounding)}
    traffic = timemodel.step_traffic(config, timemodel.lenet_layers(), batch, rounding)
    down, up = traffic.bytes(config)
    rows = [("bytes to the device", down, sent), ("bytes from the device", up, received),
            ("exchanges (frames)", traffic.exchanges(config), frames),
            ("engine busy cycles (device counter)", traffic.engine_cycles(config), busy)]
    out.append(f"\n### Bytes on the wire: predicted vs counted through `{spec}`\n\nEngine {config.rows}x"
               f"{config.cols}, depth {config.depth}, WL {config.wl}; the second of two LeNet training steps at "
               f"batch {batch} (default formats of `fxtrain.host.layers`), counted by the driver at the "
               f"transport; {time.perf_counter() - start:.0f} s.\n")
    out.append("| quantity | predicted | counted | equal |")
    out.append("|---|---:|---:|---|")
    ok = True
    for name, p, m in rows:
        ok &= p == m
        out.append(f"| {name} | {p:,} | {m:,} | {'yes' if p == m else '**NO**'} |")
    return ok


def check_host(fit_batches, test_batches, steps, out):
    from fxtrain.host.emulator import ExactEmulator

    def measure(batch):
        runs = timemodel.time_training_steps(ExactEmulator(EngineConfig()), batch, steps, threads=1)
        return {name: statistics.median(getattr(t, name) for t in runs)
                for name in ("host_cpu_s", "host_wall_s", "wall_s")}

    fits = {b: measure(b) for b in fit_batches}
    models = {clock: timemodel.HostModel.fit([(b, m[f"host_{clock}_s"]) for b, m in fits.items()])
              for clock in ("cpu", "wall")}
    out.append(f"\n### Host time: predicted vs measured (exact emulator)\n\nHost model fitted at batches "
               f"{', '.join(map(str, fit_batches))} (least squares) and used for the predictions at the other batches. Measured: "
               f"median of {steps} LeNet training steps (after one warm-up) of the time outside "
               f"`backend.gemm` (`ExactEmulator`), torch on one thread: process CPU time and wall-clock. The "
               f"machine's 2 cores are shared with other jobs, so wall-clock is noisy; CPU time is not affected "
               f"by waiting (with two torch threads, spinning OpenMP workers inflated it several-fold).\n")
    for clock, model in models.items():
        out.append(f"* {clock}: {model.fixed_s * 1e3:.1f} ms + {model.per_sample_s * 1e3:.2f} ms x batch per step")
    out.append("\n| batch | predicted CPU s | measured CPU s | error | predicted wall s | measured wall s | error "
               "| whole step wall s |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = {}
    for b in test_batches:
        m = measure(b)
        row = [f"| {b}"]
        for clock in ("cpu", "wall"):
            predicted, measured = models[clock].step_s(b), m[f"host_{clock}_s"]
            error = (predicted - measured) / measured
            worst[clock] = max(worst.get(clock, 0.0), abs(error))
            row.append(f"{predicted:.3f} | {measured:.3f} | {100 * error:+.1f} %")
        out.append(" | ".join(row) + f" | {m['wall_s']:.3f} |")
    return models["cpu"], worst


def board_table(host, batch, train_size, out):
    layers = timemodel.lenet_layers()
    out.append(f"\n### Predicted time per epoch by board (LeNet, batch {batch}, {train_size} samples, exchange "
               f"latency {timemodel.DEFAULT_EXCHANGE_S * 1e3:g} ms assumed, host model above)\n")
    out.append("| board | engine | clock | baud | format | compute | link down | link up | waits (latency) | host "
               "| total | link share |")
    out.append("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, target in TARGETS.items():
        for fmt in ("16.8", "8.4"):
            e = timemodel.estimate_epoch(timemodel.board_platform(name, fmt), layers, fmt, batch, train_size, host)
            cfg = e.platform.config
            out.append(f"| {name} | {cfg.rows}x{cfg.cols} | {target.clk_freq / 1e6:g} MHz | {target.baud:,} | "
                       f"{fmt} | {format_seconds(e.compute_s)} | {format_seconds(e.down_s)} | {format_seconds(e.up_s)} | "
                       f"{format_seconds(e.exchange_s)} | "
                       f"{format_seconds(e.host_s)} | {format_seconds(e.total_s)} | {100 * e.link_share:.1f} % |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="icebreaker", help="geometry for the cycle and byte checks")
    parser.add_argument("--cycles-batch", type=int, default=1)
    parser.add_argument("--psum-board", default="ulx3s-12f",
                        help="board (with partial-sum slots) whose chunk-outer K-split GEMMs are played on the RTL")
    parser.add_argument("--psum-batch", type=int, default=9,
                        help="batch of the partial-sum cycle check (9: conv1's and conv2's weight gradients K-split)")
    parser.add_argument("--cycles-only", action="store_true", help="only the two RTL cycle checks, printed, no doc")
    parser.add_argument("--bytes-batch", type=int, default=2)
    parser.add_argument("--sim", action="store_true", help="also count through sim:verilator (the SoC RTL)")
    parser.add_argument("--sim-batch", type=int, default=1)
    parser.add_argument("--sim-only", action="store_true", help="only the sim:verilator check, printed, no doc")
    parser.add_argument("--host-fit", type=int, nargs="+", default=(8, 32, 96),
                        help="batch sizes the host line is fitted to (least squares)")
    parser.add_argument("--host-test", type=int, nargs="+", default=(16, 64),
                        help="batch sizes the host line predicts")
    parser.add_argument("--host-steps", type=int, default=7)
    parser.add_argument("--host-only", action="store_true", help="only the host-time check and the per-board table, printed, no doc")
    parser.add_argument("--doc", default=None, help="markdown file to update between the bench markers")
    args = parser.parse_args(argv)

    out = [f"Command: `python bench/time_model.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
           f" (run {time.strftime('%Y-%m-%d %H:%M')} UTC, 2-core machine)\n"]
    ok = True
    if args.cycles_only:
        ok &= check_cycles(args.board, args.cycles_batch, out)
        ok &= check_cycles(args.psum_board, args.psum_batch, out, psum_only=True)
        print("\n".join(out))
        return 0 if ok else 1
    if args.host_only:
        host, _ = check_host(args.host_fit, args.host_test, args.host_steps, out)
        board_table(host, 64, 60000, out)
        print("\n".join(out))
        return 0
    if not args.sim_only:
        ok &= check_cycles(args.board, args.cycles_batch, out)
        ok &= check_cycles(args.psum_board, args.psum_batch, out, psum_only=True)
        print("\n".join(out), flush=True)
        ok &= check_bytes("emu", args.board, args.bytes_batch, out)
        print("\n".join(out[-8:]), flush=True)
    if args.sim:
        try:
            ok &= check_bytes("sim:verilator", args.board, args.sim_batch, out,
                              EngineConfig(rows=2, cols=4, wl=16, depth=64, max_k_log2=16))
        except Exception as error:       # report, do not hide, a simulation that could not run
            out.append(f"\n`sim:verilator` could not run: `{type(error).__name__}: {str(error)[:300]}`\n")
            ok = False
    if args.sim_only:
        print("\n".join(out))
        return 0 if ok else 1
    host, worst = check_host(args.host_fit, args.host_test, args.host_steps, out)
    board_table(host, 64, 60000, out)
    out.append(f"\nAll cycle and byte checks exact: **{'yes' if ok else 'NO'}**; worst host-time error "
               f"{100 * worst['cpu']:.1f} % (CPU time), {100 * worst['wall']:.1f} % (wall-clock).")
    text = "\n".join(out)
    print("\n=== report ===\n" + text)
    if args.doc:
        path = Path(args.doc)
        doc = path.read_text()
        if MARK_BEGIN not in doc or MARK_END not in doc:
            raise SystemExit(f"{path} has no {MARK_BEGIN} ... {MARK_END} markers")
        head, rest = doc.split(MARK_BEGIN, 1)
        _, tail = rest.split(MARK_END, 1)
        path.write_text(f"{head}{MARK_BEGIN}\n{text}\n{MARK_END}{tail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
