"""``fxtrain train``: train a CNN with its conv/linear GEMMs offloaded to a backend (:mod:`fxtrain.host.train`).

With no arguments: LeNet on the embedded MNIST subset, every GEMM on the bit-exact emulator, stochastic rounding,
weights/activations/gradients in 16.14/16.10/16.14, and the default recipe (He initialisation, SGD with momentum,
batch 32, 10 epochs, learning rate warmed up over the first 10 % of the steps then cosine-decayed, training images
shifted by up to one pixel); outputs in ``runs/<name>/``.
"""

from __future__ import annotations

import os
import sys

import torch

from ..sim.rounding import ROUNDING_MODES
from .backend import backend_specs
from .layers import DEFAULT_FORMATS
from .models import INITS, MODELS
from .train import SCHEDULES, TrainConfig, train

_DEFAULTS = TrainConfig()


def add_arguments(parser):
    parser.add_argument("--model", default=_DEFAULTS.model, choices=sorted(MODELS), help="model (default lenet)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="IDX directory (MNIST/Fashion-MNIST names; with only t10k files they are split "
                             "80/20); default: the embedded 2000+500-image MNIST subset")
    parser.add_argument("--backend", default=_DEFAULTS.backend, metavar="SPEC",
                        help=f"where the GEMMs run (default {_DEFAULTS.backend}). {backend_specs()}")
    parser.add_argument("--weights", default=DEFAULT_FORMATS["weights"], metavar="WL.FL",
                        help=f"weight format (default {DEFAULT_FORMATS['weights']})")
    parser.add_argument("--activations", default=DEFAULT_FORMATS["activations"], metavar="WL.FL",
                        help=f"activation format (default {DEFAULT_FORMATS['activations']})")
    parser.add_argument("--gradients", default=DEFAULT_FORMATS["gradients"], metavar="WL.FL",
                        help=f"gradient format (default {DEFAULT_FORMATS['gradients']})")
    parser.add_argument("--rounding", default=_DEFAULTS.rounding, choices=ROUNDING_MODES,
                        help="rounding of operands and GEMM results (default stochastic)")
    parser.add_argument("--master-weights", default=_DEFAULTS.master_weights, choices=("fixed", "float"),
                        help="keep weights on the fixed-point grid (paper, default) or a float32 master copy")
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help=f"default {_DEFAULTS.epochs}")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size,
                        help=f"default {_DEFAULTS.batch_size}")
    parser.add_argument("--lr", type=float, default=_DEFAULTS.lr, help=f"SGD learning rate (default {_DEFAULTS.lr})")
    parser.add_argument("--momentum", type=float, default=_DEFAULTS.momentum,
                        help=f"SGD momentum (default {_DEFAULTS.momentum})")
    parser.add_argument("--schedule", default=_DEFAULTS.schedule, choices=SCHEDULES,
                        help=f"learning-rate schedule (default {_DEFAULTS.schedule}: warm-up then cosine decay)")
    parser.add_argument("--warmup", type=float, default=_DEFAULTS.warmup,
                        help=f"fraction of the steps spent warming up (default {_DEFAULTS.warmup})")
    parser.add_argument("--init", default=_DEFAULTS.init, choices=INITS,
                        help=f"weight initialisation (default {_DEFAULTS.init})")
    parser.add_argument("--shift-augment", type=int, default=_DEFAULTS.shift_augment, metavar="PIXELS",
                        help=f"shift training images randomly by up to this many pixels (default "
                             f"{_DEFAULTS.shift_augment}; 0: off)")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed of everything (default 0)")
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N train images")
    parser.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--name", default=None, help="run name (default derived from the options)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: LeNet's GEMMs are too small to gain from more, and "
                             "extra threads spin badly on a busy machine)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none either when stderr is not a terminal)")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="also write the per-epoch metrics as TensorBoard scalars to DIR/<name> "
                             "(needs the [tensorboard] extra)")
    parser.add_argument("--no-plot", action="store_true", help="do not write curves.png")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training, one rank per process, launched by torchrun (docs/scale-out.md;"
                             " --batch-size is the global batch; --backend may list one backend per local rank)")
    parser.add_argument("--dist-timeout", type=float, default=300.0, metavar="S",
                        help="with --distributed: fail (not hang) when a rank is missing or silent for S seconds "
                             "(default 300)")


def run(args) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(model=args.model, data=args.data, backend=args.backend, weights=args.weights,
                      activations=args.activations, gradients=args.gradients, rounding=args.rounding,
                      master_weights=args.master_weights, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, momentum=args.momentum, schedule=args.schedule, warmup=args.warmup,
                      init=args.init, shift_augment=args.shift_augment, seed=args.seed, train_limit=args.train_limit,
                      test_limit=args.test_limit, out_dir=args.out, name=args.name, resume=args.resume,
                      progress=not args.no_progress, plot=not args.no_plot, tensorboard=args.tensorboard)
    if args.distributed:
        history = _train_distributed(cfg, args.dist_timeout)
    else:
        history = train(cfg)
    if history:
        last = history[-1]
        if args.distributed and os.environ.get("RANK", "0") != "0":
            return 0
        print(f"done: test accuracy {100 * last['test_accuracy']:.2f}% after {last['epoch']} epochs; "
              f"metrics, curves.png and checkpoint.pt in {cfg.output_dir}")
    return 0


def _train_distributed(cfg, timeout_s):
    """One rank of a torchrun launch (:mod:`fxtrain.host.distributed`); a failure names the rank."""
    from .distributed import Replicas

    replica = Replicas.from_env(timeout_s)
    try:
        return train(cfg, replica=replica)
    except BaseException as error:
        print(f"fxtrain train: rank {replica.rank}/{replica.world_size} failed: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        raise
    finally:
        replica.close()
