"""The training loop of ``fxtrain train``: data, model, backend, epochs, metrics, checkpoints, plot.

Each epoch shuffles the train split with a generator seeded by ``(seed, epoch)``, trains with SGD + momentum on
the cross-entropy loss (float, on the host), evaluates on the test split and then writes, in the output
directory:

* ``checkpoint.pt`` — model, optimizer, quantizer generator, backend state (LFSR lane states or the fast
  emulator's generator) and the metrics so far, written atomically (temporary file + ``os.replace``), so
  ``resume=True`` continues exactly as if the run had not stopped;
* ``metrics.json`` and ``metrics.csv`` — one row per epoch: ``train_loss``, ``train_accuracy``, ``test_loss``,
  ``test_accuracy``, ``wall_s``, ``macs`` (multiply-accumulates sent to the backend in that epoch), ``gemms``,
  ``saturation_rate`` (fraction of GEMM outputs the backend saturated), ``activation_saturation_rate`` and
  ``gradient_saturation_rate`` (host quantizers);
* ``curves.png`` — train loss and test accuracy per epoch.

Approximate-training methods (``cfg.methods``, :mod:`fxtrain.host.methods`) enter through four hooks of a
:class:`~fxtrain.host.methods.Methods` object: ``attach`` after the model is built, ``begin_epoch`` (format
schedule, kernel-rescaling phase), ``begin_step`` (global step) and ``inputs`` (downsampled images in the
rescaling phase, for training and evaluation); its state is part of the checkpoint.

Members
-------
With ``tensorboard`` set, the same per-epoch metrics are also written as TensorBoard scalars
(``torch.utils.tensorboard``, the ``[tensorboard]`` extra) under ``<tensorboard>/<run name>``.

The backend comes from the one registry, :func:`fxtrain.host.backend.open_backend` (``emu``, ``emu:fast``,
``float``, ``sim:verilator``, ``serial:PORT@BAUD``, ``device:…``).

Members
-------
TrainConfig
    Everything a run depends on.
build
    Model (converted when the backend is not ``float``), backend, optimizer and data of a config.
train
    Run (or resume) a training; returns the list of per-epoch metrics.
evaluate
    Loss and accuracy of a model on a dataset.
save_atomic
    ``torch.save`` through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..sim.rounding import parse_mode
from .backend import open_backend
from .convert import convert, get_offload, offload_stats
from .datasets import load_data
from .layers import DEFAULT_FORMATS, FixedConfig, _FixedMixin
from .methods import MethodConfig, Methods
from .metrics import TensorBoardLog, write_metrics
from .models import INITS, build_model
from .progress import EpochProgress
from .replica import LocalReplica, epoch_seed

__all__ = ["TrainConfig", "build", "train", "evaluate", "learning_rate", "shift_offsets", "shift_images",
           "save_atomic", "METRIC_FIELDS", "SCHEDULES"]

METRIC_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_s", "macs", "gemms",
                 "saturation_rate", "activation_saturation_rate", "gradient_saturation_rate")

SCHEDULES = ("cosine", "constant")
#: Mixed into the epoch seed for the augmentation offsets, so they are not the shuffle's random stream.
_SHIFT_STREAM = 0x5A17_F7ED

# Config fields that may differ between a run and its resumption.
_RESUMABLE = ("epochs", "out_dir", "name", "resume", "progress", "plot", "tensorboard")


@dataclass
class TrainConfig:
    """A training run.

    Parameters
    ----------
    model : str
        A key of :data:`fxtrain.host.models.MODELS`.
    data : str, optional
        IDX directory (:mod:`fxtrain.host.datasets`); None: the embedded MNIST subset.
    backend : str
        A spec of :func:`fxtrain.host.backend.open_backend`: ``"emu"``, ``"emu:fast"``, ``"float"``, a device.
    weights, activations, gradients : str
        Operand formats ``"WL.FL"``.
    rounding : str
        ``"stochastic"`` or ``"nearest"`` (a :class:`~fxtrain.sim.rounding.RoundingMode` is stored as its name).
    master_weights : str
        ``"fixed"`` or ``"float"`` (:mod:`fxtrain.host.layers`).
    input_grad : str
        ``"patches"`` or ``"convolution"``: a convolution's input gradient (``FixedConfig.input_grad``).
    epochs, batch_size : int
    lr, momentum : float
        SGD parameters (``lr`` is the peak learning rate of the schedule).
    schedule : str
        ``"cosine"``: linear warm-up over the first ``warmup`` fraction of the steps, then cosine decay to 0
        (Loshchilov & Hutter 2017), set per step from the global step number (so resuming needs no scheduler
        state); ``"constant"``: ``lr`` throughout.
    warmup : float
        Fraction of all steps spent warming up (cosine schedule).
    init : str
        Weight initialisation, :data:`fxtrain.host.models.INITS`.
    shift_augment : int
        Training images are shifted by a random whole number of pixels in ``[-shift_augment, shift_augment]``
        along each axis (zero fill; drawn from the epoch's generator, so resuming stays exact); 0 turns it off.
    seed : int
        Seeds the initialisation, the shuffling, the host quantizers and the backend's lanes.
    train_limit, test_limit : int, optional
        Use only the first images of each split.
    out_dir : str, optional
        Output directory; default ``runs/<name>``.
    name : str, optional
        Run name; default ``<model>-<backend>-<rounding>-w<weights>a<activations>g<gradients>``.
    resume : bool
        Continue from ``out_dir/checkpoint.pt``.
    progress : bool
        Show a progress bar on stderr (only when it is a terminal).
    plot : bool
        Write ``curves.png``.
    tensorboard : str, optional
        Directory for TensorBoard scalars (module docstring).
    methods : MethodConfig
        Approximate-training methods (:mod:`fxtrain.host.methods`; a dict of its fields is accepted).
    """

    model: str = "lenet"
    data: "str | None" = None
    backend: str = "emu"
    weights: str = DEFAULT_FORMATS["weights"]
    activations: str = DEFAULT_FORMATS["activations"]
    gradients: str = DEFAULT_FORMATS["gradients"]
    rounding: str = "stochastic"
    master_weights: str = "fixed"
    input_grad: str = "patches"
    epochs: int = 15
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup: float = 0.1
    init: str = "kaiming"
    shift_augment: int = 1
    seed: int = 0
    train_limit: "int | None" = None
    test_limit: "int | None" = None
    out_dir: "str | None" = None
    name: "str | None" = None
    resume: bool = False
    progress: bool = True
    plot: bool = True
    tensorboard: "str | None" = None
    methods: MethodConfig = field(default_factory=MethodConfig)

    def __post_init__(self):
        if isinstance(self.methods, dict):
            self.methods = MethodConfig(**self.methods)
        self.rounding = str(parse_mode(self.rounding))
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {self.seed!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, not {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), not {self.warmup!r}")
        if not isinstance(self.shift_augment, int) or not 0 <= self.shift_augment <= 8:
            raise ValueError(f"shift_augment must be an integer from 0 to 8 pixels, not {self.shift_augment!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, not {self.init!r}")

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        backend = self.backend.replace(":", "-").replace("/", "_")
        suffix = self.methods.run_suffix
        if self.backend == "float":
            return f"{self.model}-float{suffix}"
        grad = "" if self.input_grad == "patches" else f"-dx{self.input_grad}"
        return (f"{self.model}-{backend}-{self.rounding}-w{self.weights}a{self.activations}g{self.gradients}{grad}"
                f"{suffix}")

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.run_name


def build(cfg: TrainConfig, seed: "int | None" = None, backend_spec: "str | None" = None):
    """``(model, backend, offload, optimizer, train_set, test_set)`` for ``cfg``; ``backend`` and ``offload`` are
    None for the float baseline. The caller closes ``backend``. ``seed`` (default ``cfg.seed``) seeds the
    backend's lanes and the host quantizers (a data-parallel rank passes its own); the model's initialisation
    always uses ``cfg.seed``. ``backend_spec`` (default ``cfg.backend``) names this process's backend."""
    train_set, test_set = load_data(cfg.data)
    if cfg.train_limit:
        train_set = train_set.subset(cfg.train_limit)
    if cfg.test_limit:
        test_set = test_set.subset(cfg.test_limit)
    model = build_model(cfg.model, cfg.seed, cfg.init, in_channels=train_set.images.shape[1])
    seed = cfg.seed if seed is None else seed
    backend = open_backend(cfg.backend if backend_spec is None else backend_spec, seed=seed)
    offload = None
    if backend is not None:
        try:
            fixed = FixedConfig(cfg.weights, cfg.activations, cfg.gradients, rounding=cfg.rounding,
                                master_weights=cfg.master_weights, wl=backend.config.wl, input_grad=cfg.input_grad)
            offload = get_offload(convert(model, backend, fixed, seed=seed))
        except BaseException:
            backend.close()
            raise
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return model, backend, offload, optimizer, train_set, test_set


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based) of ``total_steps`` under ``cfg.schedule``."""
    if cfg.schedule == "constant":
        return cfg.lr
    warm = int(cfg.warmup * total_steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))


def shift_offsets(cfg: TrainConfig, n: int, epoch: int) -> "torch.Tensor | None":
    """The crop offsets ``(dy, dx)`` in ``[0, 2 * shift_augment]`` of each of the ``n`` training images in
    ``epoch`` (None without augmentation). Drawn per image index, so that a data-parallel run whose ranks see
    other slices of the same shuffled epoch shifts every image exactly as one process does."""
    if cfg.shift_augment == 0:
        return None
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch) ^ _SHIFT_STREAM)
    return torch.randint(0, 2 * cfg.shift_augment + 1, (n, 2), generator=generator)


def shift_images(images: torch.Tensor, max_shift: int, offsets: "torch.Tensor | None") -> torch.Tensor:
    """Each image of ``images`` (B x C x H x W) moved by its own ``(dy, dx) = offsets[i] - max_shift`` (offsets
    from :func:`shift_offsets`), zero-filled: a crop of the zero-padded batch."""
    if max_shift == 0:
        return images
    _, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets.tolist())])


def evaluate(model, dataset, batch_size: int = 250, transform=None):
    """``(mean cross-entropy loss, accuracy)`` of ``model`` on ``dataset`` (eval mode, no gradients); ``transform``
    maps each batch of images first (kernel rescaling's downsampling)."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            x = dataset.images[start:start + batch_size]
            x = x if transform is None else transform(x)
            y = dataset.labels[start:start + batch_size]
            logits = model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return total_loss / len(dataset), correct / len(dataset)


def save_atomic(obj, path) -> None:
    """``torch.save(obj, path)`` so that ``path`` is always either the old or the new complete file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _backend_counters(backend):
    return dict(backend.counters) if backend is not None else {}


def train(cfg: TrainConfig, log=print, *, replica: "LocalReplica | None" = None, on_epoch=None) -> list:
    """Run ``cfg`` (module docstring); returns the per-epoch metrics (all epochs, resumed ones included).

    ``replica`` (default :class:`~fxtrain.host.replica.LocalReplica`) is the data-parallel hook
    (:mod:`fxtrain.host.distributed`); only its main replica logs and writes files. ``on_epoch(row,
    checkpoint_path)`` is called by the main replica after each epoch's checkpoint and metrics are written (a sweep
    reports them to its scheduler).

    Raises FileNotFoundError if ``resume`` is set and there is no checkpoint, ValueError if the checkpoint was
    written by a run with different numerics. The backend is closed at the end, also on an error.
    """
    replica = replica or LocalReplica()
    if not replica.is_main:
        log = lambda message: None  # noqa: E731
    out_dir = cfg.output_dir
    model, backend, offload, optimizer, train_set, test_set = build(cfg, replica.seed(cfg), replica.backend_spec(cfg))
    board = None
    try:
        if replica.world_size > 1 and cfg.methods.rescale_factor > 1:
            raise ValueError(f"--rescale {cfg.methods.rescale_factor} cannot run --distributed: kernel rescaling swaps "
                             f"the parameters between phases, which a DistributedDataParallel wrapper keeps")
        methods = Methods(cfg.methods, cfg.seed)
        methods.attach(model, offload, tuple(train_set.images.shape[1:]))
        fixed = _fixed_layers(model)[0].fixed if offload is not None else None
        stepper = replica.setup(cfg, model, fixed)
        history = _restore(cfg, model, backend, offload, optimizer, log, replica, methods) if cfg.resume else []
        if not cfg.resume:
            torch.manual_seed(replica.seed(cfg))
        if replica.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard and replica.is_main:
            board = TensorBoardLog(Path(cfg.tensorboard) / cfg.run_name)
        numerics = fixed.describe() if fixed is not None else "float32"
        ranks = f" x {replica.world_size} ranks" if replica.world_size > 1 else ""
        if cfg.methods.active:
            numerics += f"; methods: {cfg.methods.describe()}"
        log(f"{cfg.run_name}: {cfg.model} on {train_set.name} ({len(train_set)} train / {len(test_set)} test), "
            f"backend {cfg.backend}{ranks}, {numerics}; output {out_dir}")
        for epoch in range(len(history), cfg.epochs):
            methods.begin_epoch(epoch, optimizer, log)
            row = _train_epoch(cfg, epoch, model, stepper, backend, optimizer, train_set, test_set, replica, methods)
            history.append(row)
            log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, train acc "
                f"{100 * row['train_accuracy']:.2f}%, test acc {100 * row['test_accuracy']:.2f}%, "
                f"{row['wall_s']:.1f} s, {row['macs'] / 1e6:.1f} M MACs on the backend, "
                f"saturation {100 * row['saturation_rate']:.3f}%")
            random_state = replica.end_epoch(model, _random_state(offload, backend))
            if not replica.is_main:
                continue
            checkpoint = {
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **random_state,
                "replicas": replica.state_dict(),
                "history": history,
                "methods": methods.state_dict(),
            }
            save_atomic(checkpoint, out_dir / "checkpoint.pt")
            write_metrics(out_dir, asdict(cfg), history, METRIC_FIELDS, cfg.run_name, cfg.plot)
            if board is not None:
                board.add_epoch(row)
            if on_epoch is not None:
                on_epoch(row, out_dir / "checkpoint.pt")
    finally:
        if board is not None:
            board.close()
        if backend is not None:
            backend.close()
    return history


def _fixed_layers(model):
    return [m for m in model.modules() if isinstance(m, _FixedMixin)]


def _random_state(offload, backend):
    return {"torch_rng": torch.random.get_rng_state(),
            "quantizer_rng": offload.generator.get_state() if offload is not None else None,
            "backend": backend.state_dict() if backend is not None else None}


def _restore(cfg, model, backend, offload, optimizer, log, replica, methods) -> list:
    """Load ``cfg``'s checkpoint into the run (through ``replica``: rank 0 reads it, each rank takes its own
    random state); returns the history so far."""
    checkpoint_path = cfg.output_dir / "checkpoint.pt"
    checkpoint = replica.load(checkpoint_path)
    saved = {k: v for k, v in checkpoint["config"].items() if k not in _RESUMABLE}
    current = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
    if saved != current:
        diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
        raise ValueError(f"Checkpoint {checkpoint_path} is from a different run (saved vs now: {diff})")
    methods.prepare_resume(checkpoint["epoch"], optimizer)
    model.load_state_dict(checkpoint["model"])
    methods.load_state_dict(checkpoint["methods"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    replica.load_state_dict(checkpoint.get("replicas", {}))
    state = replica.restore(checkpoint)
    if state is None:
        print(f"warning: rank {replica.rank}: the checkpoint holds no random state for it (written by fewer "
              f"ranks); it continues with fresh seeds", file=sys.stderr)
        state = _random_state(offload, backend)
    torch.random.set_rng_state(state["torch_rng"])
    if offload is not None:
        offload.generator.set_state(state["quantizer_rng"])
        if state["backend"] is not None and backend.restores_state:
            backend.load_state_dict(state["backend"])
        else:
            log(f"warning: backend {cfg.backend!r} cannot restore its random state; the resumed run is "
                f"statistically, not bit for bit, equivalent")
    history = checkpoint["history"]
    if len(history) != checkpoint["epoch"]:
        raise ValueError(f"Checkpoint {checkpoint_path} is inconsistent: epoch {checkpoint['epoch']} but "
                         f"{len(history)} rows of history")
    log(f"resuming {cfg.run_name} after epoch {checkpoint['epoch']}")
    return history


def _counters(model, backend, loss_sum, correct, seen):
    counters = {k: float(v) for k, v in offload_stats(model).items()}
    counters.update({k: float(v) for k, v in _backend_counters(backend).items()
                     if k in ("macs", "gemms", "outputs", "saturated")})
    counters.update(loss_sum=loss_sum, correct=float(correct), seen=float(seen))
    return counters


def _train_epoch(cfg, epoch, model, stepper, backend, optimizer, train_set, test_set, replica, methods) -> dict:
    """One epoch of SGD (module docstring) and the evaluation after it; returns the epoch's metrics row (summed
    over the replicas). ``stepper`` is the module that takes the steps (``model`` or its DDP wrapper); ``methods``
    transforms the inputs and is told of each step (approximate-training methods)."""
    n = len(train_set)
    t0 = time.perf_counter()
    before = _counters(model, backend, 0.0, 0, 0)
    batches = replica.batches(cfg, n, epoch)
    offsets = shift_offsets(cfg, n, epoch)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    with EpochProgress(cfg.progress and replica.is_main, len(batches), f"epoch {epoch + 1}/{cfg.epochs}") as progress:
        for b, idx in enumerate(batches):
            x = shift_images(train_set.images[idx], cfg.shift_augment, None if offsets is None else offsets[idx])
            x = methods.inputs(x)
            y = train_set.labels[idx]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, epoch * len(batches) + b, cfg.epochs * len(batches))
            methods.begin_step(epoch * len(batches) + b)
            logits = stepper(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            replica.after_step(model, b)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            progress.update(b + 1, loss_sum / seen)
    test_loss, test_acc = replica.evaluate(model, test_set, transform=methods.inputs)
    after = _counters(model, backend, loss_sum, correct, seen)
    total = replica.reduce({k: after[k] - before.get(k, 0.0) for k in after})
    delta = {k: int(v) if k != "loss_sum" else v for k, v in total.items()}
    delta.update({k: delta.get(k, 0) for k in ("macs", "gemms", "outputs", "saturated")})
    return {
        "epoch": epoch + 1,
        "train_loss": delta["loss_sum"] / delta["seen"],
        "train_accuracy": delta["correct"] / delta["seen"],
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "wall_s": time.perf_counter() - t0,
        "macs": delta["macs"],
        "gemms": delta["gemms"],
        "saturation_rate": delta["saturated"] / delta["outputs"] if delta["outputs"] else 0.0,
        "activation_saturation_rate": (delta["activation_saturated"] / delta["activations"]
                                       if delta.get("activations") else 0.0),
        "gradient_saturation_rate": (delta["gradient_saturated"] / delta["gradients"]
                                     if delta.get("gradients") else 0.0),
    }
