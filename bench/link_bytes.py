"""Bytes on the link per LeNet training step and per epoch: the driver of protocol version 1 (per-tile RUN /
READ_RESULT, one request at a time with frames up to 65 535 bytes, then pipelined within the device's receive
buffer), the driver of version 2 (RUN_TILES: the device walks the column tiles when K fits its memory), convolution
mode (protocol version 3 with the expander: each convolution's input feature map is sent as a keyed map and its
im2col operands are generated on the device by EXPAND; a what-if on a board built without the expander), the
minimum (each operand and each result word crosses once, no framing) and the convolution-mode minimum (each input
feature map, weight, output gradient and result once: a convolution's A operands are its input map, counted at
its forward GEMM only), and convolution mode with the partial-sum memory (K-split GEMMs chunk-outer, every operand
chunk sent once per group of ``psum_slots`` tiles: the board's slots, or ``--psum-slots`` as a what-if where the
board has none).

Usage: ``python bench/link_bytes.py [--board icebreaker] [--batch 64] [--train-size 60000] [--input-grad
convolution] [--baud 12000000]`` prints a Markdown table (quoted in ``docs/time-model.md`` §2.1-2.4);
``--input-grad convolution`` takes the layers' option of that name (a stride-1 convolution's input gradient as one
convolution of dY, its map sent by EXPAND), ``--baud`` is a what-if link rate for the epoch times (both
directions at ``10 / baud`` seconds per byte). The counts are the time model's replay of the driver's planner
(``host/traffic.py``), which ``tests/test_timemodel.py`` checks against the driver's counters (convolution mode
included).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from fxtrain.host import timemodel
from fxtrain.host.traffic import shape_keys
from fxtrain.sim.input_grad import INPUT_GRADS
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


def _conv_breakdown(cfg, rx_buffer, gemms, what="convolution-mode"):
    """Where the convolution-mode step's bytes go, per GEMM and term, largest first."""
    from fxtrain.sim.conv import EXPAND_ARGS
    from fxtrain.sim.payloads import entry_bytes, result_bytes
    from fxtrain.sim.wire import Command, request_frame_bytes

    replay = timemodel.DriverReplay(cfg)
    replay.step(gemms, step_id=0)
    terms, total = [], 0
    convs = {g.layer for g in gemms if g.conv is not None}
    for g in gemms:
        t = replay.gemm(g.m, g.k, g.n, g.rounding, *shape_keys(g, 1))
        total += sum(t.bytes(cfg, rx_buffer))
        name = f"{g.layer} {g.kind}"
        terms += [(sum(e * c for (cmd, e), c in t.writes.items() if cmd == Command.WRITE_B) * entry_bytes(cfg, "B"),
                   f"{name} B" + (" (dY re-sent per tile row, K-split)" if g.kind == "weight_grad" and g.k > cfg.depth
                                  and not cfg.psum_slots else "")),
                  (sum(e * c for (cmd, e), c in t.writes.items() if cmd == Command.WRITE_A) * entry_bytes(cfg, "A"),
                   f"{name} A"),
                  (sum(e * c for e, c in t.map_writes.items()) * entry_bytes(cfg, "B"), f"{name} feature map"),
                  (sum(t.expands.values()) * (request_frame_bytes(EXPAND_ARGS.size) + 8), f"{name} EXPAND frames"),
                  ((t.read_results + sum(n * c for (_, n), c in t.run_tiles.items())) * result_bytes(cfg),
                   f"{name} results" + (" (patches, col2im on the host)" if g.kind == "input_grad" and g.layer in convs
                                        and g.conv is None else ""))]
    terms.sort(reverse=True)
    top = ", ".join(f"{label} {x:,} ({100 * x / total:.0f} %)" for x, label in terms[:5])
    return f"Where the {what} step's {total:,} bytes go (largest terms): {top}."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", action="append")
    parser.add_argument("--format", default="16.8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--input-grad", default="patches", choices=INPUT_GRADS)
    parser.add_argument("--baud", type=int, default=None, help="what-if link rate (both directions)")
    parser.add_argument("--psum-slots", type=int, default=64, help="partial-sum slots of the last column where "
                        "the board has none (a what-if, named so in the header; default 64)")
    args = parser.parse_args(argv)
    layers = timemodel.lenet_layers()
    gemms = timemodel.training_gemms(layers, args.batch, input_grad=args.input_grad)

    def at_baud(p):
        if args.baud is None:
            return p
        return replace(p, link=replace(p.link, down_byte_s=10 / args.baud, up_byte_s=10 / args.baud))

    for board in args.board or ["icebreaker", "ulx3s-85f"]:
        platform = at_baud(timemodel.board_platform(board, args.format, expander=False, psum_slots=0))  # plain
        conv_platform = at_baud(timemodel.board_platform(board, args.format, expander=True, psum_slots=0))
        board_slots = timemodel.board_platform(board, args.format).config.psum_slots
        psum_platform = at_baud(timemodel.board_platform(board, args.format, expander=True,
                                                         psum_slots=board_slots or args.psum_slots))
        cfg = platform.config
        v = value_bytes(cfg)
        steps = args.train_size / args.batch
        print(f"\n{board}: engine {cfg.rows}x{cfg.cols}, depth {cfg.depth}, B depth {cfg.b_depth}, "
              f"format {args.format} ({v} bytes/word), "
              f"batch {args.batch}, {args.input_grad} input gradients"
              + ("" if args.baud is None else f", what-if link {args.baud:,} baud both ways")
              + "; bytes per training step (both directions), steady state\n")
        conv_name = "conv mode" + ("" if timemodel.board_platform(board, args.format).config.expander
                                   else " (what-if)")
        psum_name = (f"conv + psum ({psum_platform.config.psum_slots} slots"
                     + (")" if board_slots else ", what-if)"))
        print(f"| layer | GEMM | M x K x N | v1 one at a time | v1 pipelined | RUN_TILES | {conv_name} | {psum_name} "
              "| minimum | conv-mode minimum | RUN_TILES / minimum | conv mode / conv-mode minimum "
              "| conv + psum / conv-mode minimum | K-split |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
        cases = [(0, False, cfg), (platform.rx_buffer, False, cfg), (platform.rx_buffer, True, cfg),
                 (conv_platform.rx_buffer, True, conv_platform.config),
                 (psum_platform.rx_buffer, True, psum_platform.config)]
        replays = [timemodel.DriverReplay(c, tile_loop) for _, tile_loop, c in cases]
        for replay in replays:
            replay.step(gemms, step_id=0)
        totals = [0] * 7
        down_min = up_min = 0
        for g in gemms:
            counts = [sum(replay.gemm(g.m, g.k, g.n, g.rounding, *shape_keys(g, 1, conv=c.expander)).bytes(c, rx))
                      for replay, (rx, _, c) in zip(replays, cases)]
            minimum = v * (g.m * g.k + g.k * g.n + g.m * g.n)
            conv_min = minimum if g.conv is None else v * (g.k * g.n + g.m * g.n + (
                g.conv.words if g.kind in ("forward", "input_grad") else 0))
            down_min += v * (g.m * g.k + g.k * g.n)
            up_min += v * g.m * g.n
            for i, x in enumerate(counts + [minimum, conv_min]):
                totals[i] += x
            print(f"| {g.layer} | {g.kind} | {g.m} x {g.k} x {g.n} | " + " | ".join(f"{x:,}" for x in counts)
                  + f" | {minimum:,} | {conv_min:,} | {counts[2] / minimum:.2f} | {counts[3] / conv_min:.2f} "
                  f"| {counts[4] / conv_min:.2f} | {'yes' if g.k > cfg.depth else ''} |")
        print("| **step** | | | " + " | ".join(f"**{x:,}**" for x in totals)
              + f" | **{totals[2] / totals[5]:.2f}** | **{totals[3] / totals[6]:.2f}** "
              f"| **{totals[4] / totals[6]:.2f}** | |")
        print(f"| **epoch** (x {steps:.2f} steps) | | | "
              + " | ".join(f"{x * steps / 1e9:.2f} GB" for x in totals) + " | | | | |")
        print(f"\nConvolution mode sends {totals[3] / totals[2]:.2f} x the RUN_TILES step's bytes "
              f"({totals[3]:,} vs {totals[2]:,}); with the partial-sum memory {totals[4] / totals[2]:.2f} x "
              f"({totals[4]:,}).")
        print("\n" + _breakdown(cfg, platform.rx_buffer, gemms, v))
        print("\n" + _conv_breakdown(conv_platform.config, conv_platform.rx_buffer, gemms))
        print("\n" + _conv_breakdown(psum_platform.config, psum_platform.rx_buffer, gemms,
                                     "convolution-mode + partial-sum"))
        def epoch(p):
            return timemodel.estimate_epoch(p, layers, args.format, args.batch, args.train_size,
                                            input_grad=args.input_grad)

        seq = epoch(replace(platform, rx_buffer=0, tile_loop=False))
        v1 = epoch(replace(platform, tile_loop=False))
        piped, conv, psum = epoch(platform), epoch(conv_platform), epoch(psum_platform)
        print(f"\nEpoch without host time: v1 one request at a time {seq.total_s / 3600:.2f} h "
              f"(latency {100 * seq.exchange_s / seq.total_s:.1f} %), v1 pipelined {v1.total_s / 3600:.2f} h, "
              f"RUN_TILES {piped.total_s / 3600:.2f} h "
              f"(latency {100 * piped.exchange_s / piped.total_s:.2f} %), {conv_name} {conv.total_s / 3600:.2f} h "
              f"(engine busy {100 * conv.busy_share:.1f} %), {psum_name} {psum.total_s / 3600:.2f} h "
              f"(engine busy {100 * psum.busy_share:.1f} %; down {psum.down_s / 3600:.2f} h, up "
              f"{psum.up_s / 3600:.2f} h); the minimum bytes, each direction at "
              f"{platform.link.down_byte_s * 1e9:.0f} ns per byte, would take "
              f"{max(down_min, up_min) * steps * platform.link.down_byte_s / 3600:.2f} h (down "
              f"{down_min * steps / 1e9:.2f} GB, up {up_min * steps / 1e9:.2f} GB).")


if __name__ == "__main__":
    main()
