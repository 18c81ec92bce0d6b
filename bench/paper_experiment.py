"""Gupta et al. (2015), MNIST: float32 versus <16,FL> fixed point, FL in {8, 10, 14}, nearest vs stochastic rounding.

Trains the LeNet of :mod:`fxtrain.host.models` on all 10,000 images of the MNIST set in ``--data`` (split 8,000
train / 2,000 test by :func:`fxtrain.host.datasets.split_indices`), once in float32 and once per format and
rounding mode with every conv/linear GEMM on the **fast** emulator (:class:`fxtrain.host.emulator.FastEmulator`:
same arithmetic as the device, stochastic offsets from a torch generator instead of the LFSR lanes). As in the
paper, one format ``<16,FL>`` is used for weights, activations and gradients (and the GEMM results), and the
weights are kept in that format (``master_weights="fixed"``).

Writes ``docs/paper-experiment.md`` (table, command, settings; text after the ``<!-- discussion -->`` marker of an
existing file is kept) and ``docs/paper-experiment.png`` (test accuracy and train loss per epoch)::

    python bench/paper_experiment.py --epochs 5 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- discussion -->"


def _runs(fls):
    runs = [("float32", dict(backend="float"))]
    for fl in fls:
        for rounding in ("nearest", "stochastic"):
            fmt = f"16.{fl}"
            runs.append((f"<16,{fl}> {rounding}", dict(backend="emu:fast", weights=fmt, activations=fmt,
                                                       gradients=fmt, rounding=rounding)))
    return runs


def _train_one(job):
    label, options, common = job
    import torch
    torch.set_num_threads(1)
    from fxtrain.host.train import TrainConfig, train
    name = label.replace("<", "").replace(">", "").replace(",", ".").replace(" ", "-")
    cfg = TrainConfig(out_dir=str(Path(common["runs"]) / name), progress=False, **options,
                      **{k: v for k, v in common.items() if k != "runs"})
    start = time.perf_counter()
    history = train(cfg, log=lambda message: print(f"[{label}] {message}", flush=True))
    return label, history, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/data/mnist", help="MNIST IDX directory")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fl", type=int, nargs="+", default=[8, 10, 14], help="fraction lengths")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--runs", default="runs/paper", help="directory of the individual runs")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "paper-experiment.md"))
    parser.add_argument("--train-limit", type=int, default=None, help="first N train images only (smoke test)")
    args = parser.parse_args(argv)
    # The paper's plain recipe (constant learning rate, PyTorch's default initialisation, no augmentation), not
    # fxtrain train's default one, so the runs stay comparable with earlier reports.
    common = dict(data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  train_limit=args.train_limit, runs=args.runs, schedule="constant", init="torch", shift_augment=0)
    jobs = [(label, options, common) for label, options in _runs(args.fl)]
    start = time.perf_counter()
    with get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(_train_one, jobs, chunksize=1)
    total = time.perf_counter() - start
    write_report(results, args, total, argv if argv is not None else sys.argv[1:])
    return 0


def write_report(results, args, total, argv):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    doc = Path(args.doc)
    png = doc.with_suffix(".png")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = []
    for label, history, seconds in results:
        epochs = [h["epoch"] for h in history]
        style = "-" if "stochastic" in label else ("--" if "nearest" in label else "k-")
        ax1.plot(epochs, [100 * h["test_accuracy"] for h in history], style, marker="o", label=label)
        ax2.plot(epochs, [h["train_loss"] for h in history], style, marker="o", label=label)
        last = history[-1]
        rows.append(f"| {label} | {100 * last['test_accuracy']:.2f} | {max(100 * h['test_accuracy'] for h in history):.2f} "
                    f"| {last['train_loss']:.4f} | {100 * last['saturation_rate']:.3f} "
                    f"| {100 * last['activation_saturation_rate']:.3f} | {100 * last['gradient_saturation_rate']:.3f} "
                    f"| {seconds:.0f} |")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy (%)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("train loss")
    ax2.set_yscale("log")
    ax1.legend(fontsize=7)
    fig.suptitle(f"LeNet, MNIST 10k split 8000/2000, {args.epochs} epochs, fast emulator", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    discussion = ""
    if doc.is_file() and MARKER in doc.read_text():
        discussion = doc.read_text().split(MARKER, 1)[1]
    command = "python bench/paper_experiment.py " + " ".join(argv)
    text = f"""# Paper experiment: fixed point with nearest vs stochastic rounding (Gupta et al. 2015)

Generated by `bench/paper_experiment.py`; the numbers below come from this command (total wall time
{total / 60:.1f} min on the 2-core development machine, shared with other jobs):

```
{command.strip()}
```

Settings: LeNet (`fxtrain.host.models.LeNet`), all 10,000 images of `{args.data}` split deterministically into
8,000 train / 2,000 test (`fxtrain.host.datasets.split_indices`, seed {20150209}), SGD lr {args.lr}, momentum 0.9,
batch {args.batch_size}, {args.epochs} epochs (fewer than the paper's, to fit 25 minutes on 2 cores), seed {args.seed}.
Fixed-point runs use **one** format `<16,FL>` for weights, activations, gradients and all GEMM results, as the
paper does, weights kept in that format (`master_weights="fixed"`), and every conv/linear GEMM on the **fast
emulator** (`emu:fast`: the device's exact accumulation and rounder formula; stochastic offsets from a torch
generator rather than the LFSR lanes, so statistically, not bit for bit, equal to the device).

| run | final test acc (%) | best test acc (%) | final train loss | GEMM outputs saturated (%) | activations saturated (%) | gradients saturated (%) | wall (s) |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Saturation columns are for the last epoch. ![curves](paper-experiment.png)

{MARKER}{discussion}"""
    doc.write_text(text)
    with open(Path(args.runs) / "paper-experiment.json", "w") as f:
        json.dump({label: history for label, history, _ in results}, f, indent=1)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
