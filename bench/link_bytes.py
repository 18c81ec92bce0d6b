"""Bytes on the link per LeNet training step and per epoch: the driver as it was (one request at a time, frames
up to 65 535 bytes), as it is (pipelined within the device's receive buffer) and the minimum (each operand and
each result word crosses once, no framing).

Usage: ``python bench/link_bytes.py [--board icebreaker] [--batch 64] [--train-size 60000]`` prints a Markdown
table (quoted in ``docs/time-model.md`` §2.1). The counts are the time model's replay of the driver's planner
(``host/traffic.py``), which ``tests/test_timemodel.py`` checks against the driver's counters.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from fxtrain.host import timemodel
from fxtrain.sim.payloads import value_bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", action="append")
    parser.add_argument("--format", default="16.8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=60000)
    args = parser.parse_args(argv)
    layers = timemodel.lenet_layers()
    gemms = timemodel.training_gemms(layers, args.batch)
    for board in args.board or ["icebreaker", "ulx3s-85f"]:
        platform = timemodel.board_platform(board, args.format)
        cfg = platform.config
        v = value_bytes(cfg)
        steps = args.train_size / args.batch
        print(f"\n{board}: engine {cfg.rows}x{cfg.cols}, depth {cfg.depth}, B depth {cfg.b_depth}, "
              f"format {args.format} ({v} bytes/word), "
              f"batch {args.batch}; bytes per training step (both directions), steady state\n")
        print("| layer | GEMM | M x K x N | before | after | minimum | after / minimum |")
        print("|---|---|---|---:|---:|---:|---:|")
        replays = {rx: timemodel.DriverReplay(cfg) for rx in (0, platform.rx_buffer)}
        for replay in replays.values():
            replay.step(gemms, step_id=0)
        totals = [0, 0, 0]
        down_min = up_min = 0
        for g in gemms:
            key = (g.layer, g.kind, 1) if g.b_weights else None
            before = sum(replays[0].gemm(g.m, g.k, g.n, g.rounding, key).bytes(cfg, 0))
            after = sum(replays[platform.rx_buffer].gemm(g.m, g.k, g.n, g.rounding, key).bytes(cfg,
                                                                                            platform.rx_buffer))
            minimum = v * (g.m * g.k + g.k * g.n + g.m * g.n)
            down_min += v * (g.m * g.k + g.k * g.n)
            up_min += v * g.m * g.n
            for i, x in enumerate((before, after, minimum)):
                totals[i] += x
            print(f"| {g.layer} | {g.kind} | {g.m} x {g.k} x {g.n} | {before:,} | {after:,} | {minimum:,} | "
                  f"{after / minimum:.2f} |")
        print(f"| **step** | | | **{totals[0]:,}** | **{totals[1]:,}** | **{totals[2]:,}** | "
              f"**{totals[1] / totals[2]:.2f}** |")
        print(f"| **epoch** (x {steps:.2f} steps) | | | {totals[0] * steps / 1e9:.2f} GB | "
              f"{totals[1] * steps / 1e9:.2f} GB | {totals[2] * steps / 1e9:.2f} GB | |")
        seq = timemodel.estimate_epoch(replace(platform, rx_buffer=0), layers, args.format, args.batch,
                                       args.train_size)
        piped = timemodel.estimate_epoch(platform, layers, args.format, args.batch, args.train_size)
        print(f"\nEpoch without host time: one request at a time {seq.total_s / 3600:.2f} h "
              f"(latency {100 * seq.exchange_s / seq.total_s:.1f} %), pipelined {piped.total_s / 3600:.2f} h "
              f"(latency {100 * piped.exchange_s / piped.total_s:.2f} %); the minimum bytes, each direction at "
              f"{platform.link.down_byte_s * 1e9:.0f} ns per byte, would take "
              f"{max(down_min, up_min) * steps * platform.link.down_byte_s / 3600:.2f} h (down "
              f"{down_min * steps / 1e9:.2f} GB, up {up_min * steps / 1e9:.2f} GB).")


if __name__ == "__main__":
    main()
