"""``fxtrain train``: train a CNN with its conv/linear GEMMs offloaded to a backend (:mod:`fxtrain.host.train`).

With no arguments: LeNet on the embedded MNIST subset, every GEMM on the bit-exact emulator, stochastic rounding,
weights/activations/gradients in 16.14/16.10/16.14, and the default recipe (He initialisation, SGD with momentum,
batch 32, 15 epochs, learning rate warmed up over the first 10 % of the steps then cosine-decayed, training images
shifted by up to one pixel); outputs in ``runs/<name>/``.
"""

from __future__ import annotations

import os
import sys

import torch

from ..sim.input_grad import INPUT_GRADS
from ..sim.rounding import ROUNDING_MODES
from .backend import backend_specs
from .layers import DEFAULT_FORMATS
from .methods import MethodConfig
from .methods.gradapprox import MODES as GRADAPPROX_MODES, SCHEDULES as GRADAPPROX_SCHEDULES
from .methods.sampling import SAMPLERS
from .models import INITS, MODELS
from .train import SCHEDULES, TrainConfig, train

_DEFAULTS = TrainConfig()
_METHOD_DEFAULTS = MethodConfig()


def add_arguments(parser):
    parser.add_argument("--model", default=_DEFAULTS.model, choices=sorted(MODELS), help="model (default lenet)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="IDX directory (MNIST/Fashion-MNIST names; with only t10k files they are split "
                             "80/20) or CIFAR-10 python batches (data_batch_N, test_batch); default: the embedded "
                             "2000+500-image MNIST subset")
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
    parser.add_argument("--input-grad", default=_DEFAULTS.input_grad, choices=INPUT_GRADS,
                        help="a convolution's input gradient: the patch GEMM dY.W folded on the host (default), or "
                        "one convolution of dY with the flipped kernel, rounded once per element (stride 1; a "
                        "device with the expander then receives dY once and returns dX, docs/numerics.md 7.1)")
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
    add_method_arguments(parser)


def add_method_arguments(parser):
    """The approximate-training options (:mod:`fxtrain.host.methods`, ``docs/methods.md``)."""
    group = parser.add_argument_group("approximate-training methods (docs/methods.md)")
    group.add_argument("--sampling", default=None, choices=SAMPLERS,
                       help="column-row sampling (Adelman et al. 2021): topk, crs (with replacement) or bernoulli")
    group.add_argument("--sample-ratio", type=float, default=_METHOD_DEFAULTS.sample_ratio,
                       help=f"fraction of channels / examples kept (default {_METHOD_DEFAULTS.sample_ratio})")
    group.add_argument("--sample-min-k", type=int, default=_METHOD_DEFAULTS.sample_min_k,
                       help=f"keep at least this many (default {_METHOD_DEFAULTS.sample_min_k})")
    group.add_argument("--sample-mode", default=_METHOD_DEFAULTS.sample_mode, choices=("forward", "backward"),
                       help="forward: sample input channels in the forward pass (default); backward: exact forward, "
                            "sampled input and weight gradients")
    group.add_argument("--sample-ends", action="store_true",
                       help="also sample the first convolution and the last linear layer")
    group.add_argument("--gradapprox", default=None, choices=GRADAPPROX_MODES,
                       help="weight-gradient approximation (Wang et al. 2019) of selected convolutions: zero, "
                            "random or top1")
    group.add_argument("--gradapprox-schedule", default=_METHOD_DEFAULTS.gradapprox_schedule,
                       choices=GRADAPPROX_SCHEDULES,
                       help="every4: every 4th conv from the 2nd, every step (default); alternate: every other "
                            "conv, every other step; all4: every conv, every 4th step")
    group.add_argument("--rescale", type=int, default=1, metavar="S",
                       help="kernel rescaling (de Gusmão et al. 2016): first epochs at 1/S resolution with "
                            "ceil(k/S) kernels (default 1: off)")
    group.add_argument("--rescale-epochs", type=int, default=_METHOD_DEFAULTS.rescale_epochs,
                       help=f"epochs at low resolution (default {_METHOD_DEFAULTS.rescale_epochs})")
    group.add_argument("--precision-schedule", default=None, metavar="E:W/A/G,...",
                       help="operand formats per epoch range, e.g. 0:8.6/8.4/8.6,2:16.14/16.10/16.14 (overrides "
                            "--weights/--activations/--gradients)")


def method_config(args) -> MethodConfig:
    return MethodConfig(sampling=args.sampling, sample_ratio=args.sample_ratio, sample_min_k=args.sample_min_k,
                        sample_mode=args.sample_mode, sample_ends=args.sample_ends, gradapprox=args.gradapprox,
                        gradapprox_schedule=args.gradapprox_schedule, rescale_factor=args.rescale,
                        rescale_epochs=args.rescale_epochs, precision_schedule=args.precision_schedule)


def run(args) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(model=args.model, data=args.data, backend=args.backend, weights=args.weights,
                      activations=args.activations, gradients=args.gradients, rounding=args.rounding,
                      master_weights=args.master_weights, input_grad=args.input_grad, epochs=args.epochs,
                      batch_size=args.batch_size,
                      lr=args.lr, momentum=args.momentum, schedule=args.schedule, warmup=args.warmup,
                      init=args.init, shift_augment=args.shift_augment, seed=args.seed, train_limit=args.train_limit,
                      test_limit=args.test_limit, out_dir=args.out, name=args.name, resume=args.resume,
                      progress=not args.no_progress, plot=not args.no_plot, tensorboard=args.tensorboard,
                      methods=method_config(args))
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
