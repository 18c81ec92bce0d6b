"""Bytes on the link per LeNet training step and per epoch: the driver of protocol version 1 (per-tile RUN /
READ_RESULT, one request at a time with frames up to 65 535 bytes, then pipelined within the device's receive
buffer), the driver of version 2 (RUN_TILES: the device walks the column tiles when K fits its memory) and the
minimum (each operand and each result word crosses once, no framing).

Usage: ``python bench/link_bytes.py [--board icebreaker] [--batch 64] [--train-size 60000]`` prints a Markdown
table (quoted in ``docs/time-model.md`` §2.1). The counts are the time model's replay of the driver's planner
(``host/traffic.py``), which ``tests/test_timemodel.py`` checks against the driver's counters.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from fxtrain.host import timemodel
from fxtrain.sim.payloads import value_bytes


def _breakdown(cfg, rx_buffer, gemms, v):
    """Where the RUN_TILES step's bytes go: operand and result payload vs each word once, and the framing."""
    from fxtrain.sim.payloads import entry_bytes, result_bytes
    from fxtrain.sim.wire import Command

    traffic = timemodel.step_traffic(cfg, timemodel.lenet_layers(), None, gemms=gemms)
    split = timemodel.Traffic()
    replay = timemodel.DriverReplay(cfg)
    replay.step(gemms, step_id=0)
    for g in gemms:
        if g.k > cfg.depth:
            split += replay.gemm(g.m, g.k, g.n, g.rounding, (g.layer, g.kind, 1) if g.b_weights else None)
        else:
            replay.gemm(g.m, g.k, g.n, g.rounding, (g.layer, g.kind, 1) if g.b_weights else None)
    a = sum(e * c for (cmd, e), c in traffic.writes.items() if cmd == Command.WRITE_A) * entry_bytes(cfg, "A")
    b = sum(e * c for (cmd, e), c in traffic.writes.items() if cmd == Command.WRITE_B) * entry_bytes(cfg, "B")
    tiles = traffic.read_results + sum(n * c for (_, n), c in traffic.run_tiles.items())
    res = tiles * result_bytes(cfg)
    total = sum(traffic.bytes(cfg, rx_buffer))
    a_min = v * sum(g.m * g.k for g in gemms)
    b_min = v * sum(g.k * g.n for g in gemms)
    c_min = v * sum(g.m * g.n for g in gemms)
    split_bytes = sum(split.bytes(cfg, rx_buffer))
    return (f"Where the RUN_TILES step's {total:,} bytes go: A entries {a:,} (each word once: {a_min:,}), B entries "
            f"{b:,} (once: {b_min:,}), result tiles {res:,} (once: {c_min:,}; padding and saturation flags), "
            f"framing and arguments {total - a - b - res:,}; the two K-split weight-gradient GEMMs "
            f"{split_bytes:,} ({100 * split_bytes / total:.0f} %).")


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
        print("| layer | GEMM | M x K x N | v1 one at a time | v1 pipelined | RUN_TILES | minimum | RUN_TILES / minimum "
              "| K-split |")
        print("|---|---|---|---:|---:|---:|---:|---:|:---:|")
        cases = [(0, False), (platform.rx_buffer, False), (platform.rx_buffer, True)]
        replays = [timemodel.DriverReplay(cfg, tile_loop) for _, tile_loop in cases]
        for replay in replays:
            replay.step(gemms, step_id=0)
        totals = [0, 0, 0, 0]
        down_min = up_min = 0
        for g in gemms:
            key = (g.layer, g.kind, 1) if g.b_weights else None
            counts = [sum(replay.gemm(g.m, g.k, g.n, g.rounding, key).bytes(cfg, rx))
                      for replay, (rx, _) in zip(replays, cases)]
            minimum = v * (g.m * g.k + g.k * g.n + g.m * g.n)
            down_min += v * (g.m * g.k + g.k * g.n)
            up_min += v * g.m * g.n
            for i, x in enumerate(counts + [minimum]):
                totals[i] += x
            print(f"| {g.layer} | {g.kind} | {g.m} x {g.k} x {g.n} | " + " | ".join(f"{x:,}" for x in counts)
                  + f" | {minimum:,} | {counts[-1] / minimum:.2f} | {'yes' if g.k > cfg.depth else ''} |")
        print("| **step** | | | " + " | ".join(f"**{x:,}**" for x in totals)
              + f" | **{totals[2] / totals[3]:.2f}** | |")
        print(f"| **epoch** (x {steps:.2f} steps) | | | "
              + " | ".join(f"{x * steps / 1e9:.2f} GB" for x in totals) + " | | |")
        print("\n" + _breakdown(cfg, platform.rx_buffer, gemms, v))
        seq = timemodel.estimate_epoch(replace(platform, rx_buffer=0, tile_loop=False), layers, args.format,
                                       args.batch, args.train_size)
        v1 = timemodel.estimate_epoch(replace(platform, tile_loop=False), layers, args.format, args.batch,
                                      args.train_size)
        piped = timemodel.estimate_epoch(platform, layers, args.format, args.batch, args.train_size)
        print(f"\nEpoch without host time: v1 one request at a time {seq.total_s / 3600:.2f} h "
              f"(latency {100 * seq.exchange_s / seq.total_s:.1f} %), v1 pipelined {v1.total_s / 3600:.2f} h, "
              f"RUN_TILES {piped.total_s / 3600:.2f} h "
              f"(latency {100 * piped.exchange_s / piped.total_s:.2f} %); the minimum bytes, each direction at "
              f"{platform.link.down_byte_s * 1e9:.0f} ns per byte, would take "
              f"{max(down_min, up_min) * steps * platform.link.down_byte_s / 3600:.2f} h (down "
              f"{down_min * steps / 1e9:.2f} GB, up {up_min * steps / 1e9:.2f} GB).")


if __name__ == "__main__":
    main()
