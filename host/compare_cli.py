"""``fxtrain compare``: float32, fixed point and every approximate-training method on one backend, as a table and
a plot (:mod:`fxtrain.host.compare`, ``docs/methods.md``).

Defaults: LeNet on the embedded MNIST subset, the fast emulator (statistically equivalent to the exact one and
fast enough for a grid of runs; ``--backend emu`` or a device spec runs the same grid there), 2 epochs, seed 0,
all variants: a few minutes on two cores.
"""

from __future__ import annotations

import torch

from .compare import DEFAULT_BOARDS, VARIANTS, load_compare_config, run_compare
from .models import MODELS


def add_arguments(parser):
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="JSON or TOML file with CompareConfig fields (flags override it)")
    parser.add_argument("--model", default=None, choices=sorted(MODELS), help="model (default lenet)")
    parser.add_argument("--backend", default=None, help="backend of the fixed-point runs (default emu:fast)")
    parser.add_argument("--data", default=None, metavar="DIR", help="IDX or CIFAR-10 directory (default embedded)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0)")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS), metavar="VARIANT",
                        help=f"subset of: {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N train images")
    parser.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64")
    parser.add_argument("--boards", nargs="*", default=None,
                        help=f"boards for the time model's prediction (default {' '.join(DEFAULT_BOARDS)}); none: "
                             f"no prediction (ResNet-20: the time model replays the driver tile by tile, which "
                             f"takes longer than training on the emulator)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default runs/compare)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def run(args) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    cc = load_compare_config(args.config, model=args.model, backend=args.backend, data=args.data,
                             epochs=args.epochs, seeds=args.seeds, variants=args.variants,
                             train_limit=args.train_limit, test_limit=args.test_limit, batch_size=args.batch_size,
                             boards=args.boards, out_dir=args.out)
    run_compare(cc)
    print(f"done: results.csv, summary.md, compare.png in {cc.out_dir}")
    print((__import__("pathlib").Path(cc.out_dir) / "summary.md").read_text())
    return 0
