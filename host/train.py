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
TrainConfig
    Everything a run depends on.
open_backend
    ``"float"`` -> None, ``"emu"`` (or ``"emu:exact"``) -> :class:`ExactEmulator`, ``"emu:fast"`` ->
    :class:`FastEmulator`, anything else -> ``fxtrain.host.device.open_backend`` (imported only then), with a
    ``"device:"`` prefix removed (``device:emu`` is the Device driver over the protocol emulator).
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

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..sim.gemm import EngineConfig
from .datasets import load_data
from .emulator import ExactEmulator, FastEmulator
from .layers import DEFAULT_FORMATS, FixedConfig, convert, offload_stats
from .methods import MethodConfig, Methods
from .models import build_model
from .quantize import check_mode

__all__ = ["TrainConfig", "open_backend", "build", "train", "evaluate", "save_atomic", "METRIC_FIELDS"]

METRIC_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_s", "macs", "gemms",
                 "saturation_rate", "activation_saturation_rate", "gradient_saturation_rate")

# Config fields that may differ between a run and its resumption.
_RESUMABLE = ("epochs", "out_dir", "name", "resume", "progress", "plot")


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
        ``"emu"``, ``"emu:fast"``, ``"float"`` or a device spec for ``fxtrain.host.device.open_backend``.
    weights, activations, gradients : str
        Operand formats ``"WL.FL"``.
    rounding : str
        ``"stochastic"`` or ``"nearest"``.
    master_weights : str
        ``"fixed"`` or ``"float"`` (:mod:`fxtrain.host.layers`).
    epochs, batch_size : int
    lr, momentum : float
        SGD parameters.
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
        Print a progress line to stderr.
    plot : bool
        Write ``curves.png``.
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
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    train_limit: "int | None" = None
    test_limit: "int | None" = None
    out_dir: "str | None" = None
    name: "str | None" = None
    resume: bool = False
    progress: bool = True
    plot: bool = True
    methods: MethodConfig = field(default_factory=MethodConfig)

    def __post_init__(self):
        if isinstance(self.methods, dict):
            self.methods = MethodConfig(**self.methods)
        self.rounding = check_mode(self.rounding)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {self.seed!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, not {self.lr!r}")

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        backend = self.backend.replace(":", "-").replace("/", "_")
        suffix = _methods_suffix(self.methods)
        if self.backend == "float":
            return f"{self.model}-float{suffix}"
        return f"{self.model}-{backend}-{self.rounding}-w{self.weights}a{self.activations}g{self.gradients}{suffix}"

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.run_name


def _methods_suffix(m: MethodConfig) -> str:
    parts = []
    if m.sampling:
        parts.append(f"{m.sampling}{m.sample_ratio:g}{m.sample_mode[0]}")
    if m.gradapprox:
        parts.append(f"{m.gradapprox}-{m.gradapprox_schedule}")
    if m.rescale_factor > 1:
        parts.append(f"rescale{m.rescale_factor}x{m.rescale_epochs}")
    if m.precision_schedule:
        parts.append("sched" + m.precision_schedule.replace(":", "_").replace("/", "-").replace(",", "+"))
    return "".join("-" + p for p in parts)


def open_backend(spec: str, seed: int = 0, config: "EngineConfig | None" = None):
    """The backend named by ``spec`` (module docstring); ``None`` for ``"float"``."""
    if spec == "float":
        return None
    if spec in ("emu", "emu:exact"):
        return ExactEmulator(config, seed)
    if spec == "emu:fast":
        return FastEmulator(config, seed)
    try:
        from . import device
    except ImportError:
        device = None
    if device is None or not hasattr(device, "open_backend"):
        raise ValueError(f"Unknown backend {spec!r}: use 'emu', 'emu:fast' or 'float' (device backends need "
                         f"fxtrain.host.device.open_backend)")
    if spec.startswith("device:"):  # e.g. device:emu, the Device driver over the protocol emulator
        spec = spec[len("device:"):]
    return device.open_backend(spec, config=config, seed=seed)


def build(cfg: TrainConfig):
    """``(model, backend, fixed, optimizer, train_set, test_set)`` for ``cfg``; ``backend`` and ``fixed`` are None
    for the float baseline."""
    train_set, test_set = load_data(cfg.data)
    if cfg.train_limit:
        train_set = train_set.subset(cfg.train_limit)
    if cfg.test_limit:
        test_set = test_set.subset(cfg.test_limit)
    model = build_model(cfg.model, cfg.seed, in_channels=train_set.images.shape[1])
    backend = open_backend(cfg.backend, cfg.seed)
    fixed = None
    if backend is not None:
        fixed = FixedConfig(backend, cfg.weights, cfg.activations, cfg.gradients, rounding=cfg.rounding,
                            master_weights=cfg.master_weights, seed=cfg.seed)
        convert(model, fixed=fixed)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return model, backend, fixed, optimizer, train_set, test_set


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


class _Progress:
    """One self-overwriting status line on stderr, at most every 0.2 s."""

    def __init__(self, enabled, total, label):
        self.enabled, self.total, self.label = enabled and total > 0, total, label
        self.last = 0.0
        self.start = time.perf_counter()

    def update(self, done, loss):
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.2 and done < self.total):
            return
        self.last = now
        filled = int(20 * done / self.total)
        rate = done / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total} "
                         f"loss {loss:.4f} {rate:.1f} batch/s ")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _backend_counters(backend):
    return dict(getattr(backend, "counters", {})) if backend is not None else {}


def _write_metrics(out_dir: Path, cfg: TrainConfig, history: list, plot: bool):
    with open(out_dir / "metrics.json.tmp", "w") as f:
        json.dump({"config": asdict(cfg), "epochs": history}, f, indent=1)
    os.replace(out_dir / "metrics.json.tmp", out_dir / "metrics.json")
    with open(out_dir / "metrics.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in METRIC_FIELDS})
    os.replace(out_dir / "metrics.csv.tmp", out_dir / "metrics.csv")
    if plot and history:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        epochs = [row["epoch"] for row in history]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
        ax1.plot(epochs, [row["train_loss"] for row in history], "o-")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("train loss")
        ax2.plot(epochs, [100 * row["test_accuracy"] for row in history], "o-")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("test accuracy (%)")
        fig.suptitle(cfg.run_name, fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / "curves.png", dpi=100)
        plt.close(fig)


def train(cfg: TrainConfig, log=print) -> list:
    """Run ``cfg`` (module docstring); returns the per-epoch metrics (all epochs, resumed ones included).

    Raises FileNotFoundError if ``resume`` is set and there is no checkpoint, ValueError if the checkpoint was
    written by a run with different numerics.
    """
    out_dir = cfg.output_dir
    model, backend, fixed, optimizer, train_set, test_set = build(cfg)
    methods = Methods(cfg.methods, cfg.seed)
    methods.attach(model, fixed, tuple(train_set.images.shape[1:]))
    history = []
    start_epoch = 0
    checkpoint_path = out_dir / "checkpoint.pt"
    if cfg.resume:
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"Cannot resume: no checkpoint at {checkpoint_path}")
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        saved = {k: v for k, v in checkpoint["config"].items() if k not in _RESUMABLE}
        current = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
        if saved != current:
            diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
            raise ValueError(f"Checkpoint {checkpoint_path} is from a different run (saved vs now: {diff})")
        methods.prepare_resume(checkpoint["epoch"], optimizer)
        model.load_state_dict(checkpoint["model"])
        methods.load_state_dict(checkpoint["methods"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.random.set_rng_state(checkpoint["torch_rng"])
        if fixed is not None:
            fixed.generator.set_state(checkpoint["quantizer_rng"])
            if checkpoint["backend"] is not None and hasattr(backend, "load_state_dict"):
                backend.load_state_dict(checkpoint["backend"])
            else:
                log(f"warning: backend {cfg.backend!r} cannot restore its random state; the resumed run is "
                    f"statistically, not bit for bit, equivalent")
        history = checkpoint["history"]
        start_epoch = checkpoint["epoch"]
        log(f"resuming {cfg.run_name} after epoch {start_epoch}")
    else:
        torch.manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    numerics = fixed.describe() if fixed is not None else "float32"
    if cfg.methods.active:
        numerics += f"; methods: {cfg.methods.describe()}"
    log(f"{cfg.run_name}: {cfg.model} on {train_set.name} ({len(train_set)} train / {len(test_set)} test), "
        f"backend {cfg.backend}, {numerics}; output {out_dir}")
    n = len(train_set)
    batches = -(-n // cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        methods.begin_epoch(epoch, optimizer, log)
        before = _backend_counters(backend)
        stats_before = offload_stats(model)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        model.train()
        progress = _Progress(cfg.progress, batches, f"epoch {epoch + 1}/{cfg.epochs}")
        loss_sum, correct = 0.0, 0
        for b in range(batches):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = methods.inputs(train_set.images[idx]), train_set.labels[idx]
            methods.begin_step(epoch * batches + b)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            progress.update(b + 1, loss_sum / min(n, (b + 1) * cfg.batch_size))
        test_loss, test_acc = evaluate(model, test_set, transform=methods.inputs)
        after = _backend_counters(backend)
        stats = offload_stats(model)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("macs", "gemms", "outputs", "saturated")}
        sdelta = {k: stats.get(k, 0) - stats_before.get(k, 0) for k in stats}
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / n,
            "train_accuracy": correct / n,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "wall_s": time.perf_counter() - t0,
            "macs": delta["macs"],
            "gemms": delta["gemms"],
            "saturation_rate": delta["saturated"] / delta["outputs"] if delta["outputs"] else 0.0,
            "activation_saturation_rate": (sdelta["activation_saturated"] / sdelta["activations"]
                                           if sdelta.get("activations") else 0.0),
            "gradient_saturation_rate": (sdelta["gradient_saturated"] / sdelta["gradients"]
                                         if sdelta.get("gradients") else 0.0),
        }
        history.append(row)
        log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, train acc {100 * row['train_accuracy']:.2f}%, "
            f"test acc {100 * test_acc:.2f}%, {row['wall_s']:.1f} s, {row['macs'] / 1e6:.1f} M MACs on the backend, "
            f"saturation {100 * row['saturation_rate']:.3f}%")
        checkpoint = {
            "config": asdict(cfg),
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.random.get_rng_state(),
            "quantizer_rng": fixed.generator.get_state() if fixed is not None else None,
            "backend": backend.state_dict() if hasattr(backend, "state_dict") else None,
            "history": history,
            "methods": methods.state_dict(),
        }
        save_atomic(checkpoint, checkpoint_path)
        _write_metrics(out_dir, cfg, history, cfg.plot)
    return history
