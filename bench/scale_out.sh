#!/usr/bin/env bash
# The measurements of docs/scale-out.md: a sweep of 8 trials on 2 CPUs with ASHA and without (FIFO), and
# data-parallel training on 1 and 2 ranks. Run from the repository root with the [sweep] extra installed:
#   nice -n 15 bench/scale_out.sh [WORK_DIR]
# Outputs (tables, metrics, plot, logs) are copied to bench/results/scale-out/.
set -euo pipefail
work=${1:-/tmp/fxtrain-scale-out}
bin=$(dirname "$(command -v python)")
results=bench/results/scale-out
rm -rf "$work" && mkdir -p "$work" "$results"
sweep=(--backend emu:fast --epochs 4 --lr 0.1,0.05,0.02,0.005 --seed 0,1 --num-cpus 2)
for scheduler in asha fifo; do
    fxtrain sweep "${sweep[@]}" --scheduler "$scheduler" --out "$work/sweep-$scheduler" 2>&1 \
        | grep -E "^sweep " | tee "$results/sweep-$scheduler.log"
    for f in trials.md trials.csv accuracy_vs_time.png; do
        cp "$work/sweep-$scheduler/$f" "$results/sweep-$scheduler-$f"
    done
done
for ranks in 1 2; do
    "$bin/torchrun" --nproc-per-node "$ranks" -m fxtrain.host.cli train --distributed --backend emu --epochs 2 \
        --no-progress --no-plot --out "$work/ddp-$ranks" 2>&1 | grep -E "^(epoch|done|lenet)" \
        | tee "$results/ddp-$ranks.log"
    cp "$work/ddp-$ranks/metrics.csv" "$results/ddp-$ranks-metrics.csv"
done
