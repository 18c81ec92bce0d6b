"""Speed of the time model's driver replay (``host/traffic.py``): the fast path (periodic tile rows skipped)
against the full tile-by-tile replay, measured in the same run on the same GEMM lists, and a check that both
count the same traffic.

Usage: ``python bench/replay_speed.py [--model resnet20|lenet ...] [--board icebreaker ...] [--batch 32]``
prints a Markdown table (quoted in ``docs/methods.md``). One "step" is the steady-state traffic of one training
step as :func:`fxtrain.host.timemodel.step_traffic` computes it: a step replayed from a fresh planner, then the
step that is counted (two steps replayed per row of the table).
"""

from __future__ import annotations

import argparse
import time

from fxtrain.host import timemodel
from fxtrain.host.models import build_model


def steady_step(config, gemms, fast):
    """``(traffic, seconds, replay)`` of one steady-state step (the first step replayed, the second counted)."""
    start = time.perf_counter()
    replay = timemodel.DriverReplay(config, fast=fast)
    replay.step(gemms, step_id=0)
    traffic = replay.step(gemms, step_id=1)
    return traffic, time.perf_counter() - start, replay


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=["lenet", "resnet20"])
    parser.add_argument("--board", action="append")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--format", default="16.14")
    args = parser.parse_args(argv)
    print("| model | board | RUN + RUN_TILES / step | full replay (s) | fast replay (s) | speed-up | tile rows replayed "
          "/ skipped (fast) | same traffic |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for model_name in args.model or ["lenet", "resnet20"]:
        layers = timemodel.layer_geometry(build_model(model_name, 0, in_channels=1), (1, 28, 28))
        gemms = timemodel.training_gemms(layers, args.batch)
        for board in args.board or ["ulx3s-85f", "icebreaker"]:
            config = timemodel.board_platform(board, args.format).config
            fast, fast_s, replay = steady_step(config, gemms, True)
            full, full_s, _ = steady_step(config, gemms, False)
            same = fast == full
            print(f"| {model_name} | {board} | {full.n_runs + sum(full.run_tiles.values()):,} | {full_s:.2f} | {fast_s:.2f} | "
                  f"{full_s / fast_s:.1f}x | {replay.replayed_rows:,} / {replay.skipped_rows:,} | "
                  f"{'yes' if same else 'NO'} |", flush=True)
            if not same:
                raise SystemExit(f"{model_name} on {board}: the fast replay counted {fast}, the full one {full}")


if __name__ == "__main__":
    main()
