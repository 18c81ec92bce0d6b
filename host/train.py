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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..sim.gemm import EngineConfig
from .datasets import load_data
from .emulator import ExactEmulator, FastEmulator
from .layers import DEFAULT_FORMATS, FixedConfig, convert, offload_stats
from .models import build_model
from .quantize import check_mode
from .replica import LocalReplica

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

    def __post_init__(self):
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
        if self.backend == "float":
            return f"{self.model}-float"
        return f"{self.model}-{backend}-{self.rounding}-w{self.weights}a{self.activations}g{self.gradients}"

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.run_name


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


def build(cfg: TrainConfig, seed: "int | None" = None, backend_spec: "str | None" = None):
    """``(model, backend, fixed, optimizer, train_set, test_set)`` for ``cfg``; ``backend`` and ``fixed`` are None
    for the float baseline. ``seed`` (default ``cfg.seed``) seeds the backend's lanes and the host quantizers
    (a data-parallel rank passes its own); the model's initialisation always uses ``cfg.seed``. ``backend_spec``
    (default ``cfg.backend``) names this process's backend."""
    train_set, test_set = load_data(cfg.data)
    if cfg.train_limit:
        train_set = train_set.subset(cfg.train_limit)
    if cfg.test_limit:
        test_set = test_set.subset(cfg.test_limit)
    model = build_model(cfg.model, cfg.seed)
    seed = cfg.seed if seed is None else seed
    backend = open_backend(cfg.backend if backend_spec is None else backend_spec, seed)
    fixed = None
    if backend is not None:
        fixed = FixedConfig(backend, cfg.weights, cfg.activations, cfg.gradients, rounding=cfg.rounding,
                            master_weights=cfg.master_weights, seed=seed)
        convert(model, fixed=fixed)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return model, backend, fixed, optimizer, train_set, test_set


def evaluate(model, dataset, batch_size: int = 250):
    """``(mean cross-entropy loss, accuracy)`` of ``model`` on ``dataset`` (eval mode, no gradients)."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            x = dataset.images[start:start + batch_size]
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


def _random_state(fixed, backend):
    return {"torch_rng": torch.random.get_rng_state(),
            "quantizer_rng": fixed.generator.get_state() if fixed is not None else None,
            "backend": backend.state_dict() if hasattr(backend, "state_dict") else None}


def _load_random_state(state, cfg, fixed, backend, log):
    torch.random.set_rng_state(state["torch_rng"])
    if fixed is not None:
        fixed.generator.set_state(state["quantizer_rng"])
        if state["backend"] is not None and hasattr(backend, "load_state_dict"):
            backend.load_state_dict(state["backend"])
        else:
            log(f"warning: backend {cfg.backend!r} cannot restore its random state; the resumed run is "
                f"statistically, not bit for bit, equivalent")


def _counters(model, backend, loss_sum, correct, seen):
    counters = {k: float(v) for k, v in offload_stats(model).items()}
    counters.update({k: float(v) for k, v in _backend_counters(backend).items()
                     if k in ("macs", "gemms", "outputs", "saturated")})
    counters.update(loss_sum=loss_sum, correct=float(correct), seen=float(seen))
    return counters


def train(cfg: TrainConfig, log=print, *, replica: "LocalReplica | None" = None, on_epoch=None) -> list:
    """Run ``cfg`` (module docstring); returns the per-epoch metrics (all epochs, resumed ones included).

    ``replica`` (default :class:`LocalReplica`) is the data-parallel hook (:mod:`fxtrain.host.distributed`);
    only its main replica logs and writes files. ``on_epoch(row, checkpoint_path)`` is called by the main
    replica after each epoch's checkpoint and metrics are written (a sweep reports them to its scheduler).

    Raises FileNotFoundError if ``resume`` is set and there is no checkpoint, ValueError if the checkpoint was
    written by a run with different numerics.
    """
    replica = replica or LocalReplica()
    if not replica.is_main:
        log = lambda message: None  # noqa: E731
    out_dir = cfg.output_dir
    model, backend, fixed, optimizer, train_set, test_set = build(cfg, replica.seed(cfg), replica.backend_spec(cfg))
    stepper = replica.setup(cfg, model, fixed)
    history = []
    start_epoch = 0
    checkpoint_path = out_dir / "checkpoint.pt"
    if cfg.resume:
        checkpoint = replica.load(checkpoint_path)
        saved = {k: v for k, v in checkpoint["config"].items() if k not in _RESUMABLE}
        current = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
        if saved != current:
            diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
            raise ValueError(f"Checkpoint {checkpoint_path} is from a different run (saved vs now: {diff})")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = replica.restore(checkpoint)
        if state is not None:
            _load_random_state(state, cfg, fixed, backend, log)
        else:
            print(f"warning: rank {replica.rank}: the checkpoint holds no random state for it (written by fewer "
                  f"ranks); it continues with fresh seeds", file=sys.stderr)
        replica.load_state_dict(checkpoint.get("replicas", {}))
        history = checkpoint["history"]
        start_epoch = checkpoint["epoch"]
        log(f"resuming {cfg.run_name} after epoch {start_epoch}")
    else:
        torch.manual_seed(replica.seed(cfg))
    if replica.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    numerics = fixed.describe() if fixed is not None else "float32"
    ranks = f" x {replica.world_size} ranks" if replica.world_size > 1 else ""
    log(f"{cfg.run_name}: {cfg.model} on {train_set.name} ({len(train_set)} train / {len(test_set)} test), "
        f"backend {cfg.backend}{ranks}, {numerics}; output {out_dir}")
    n = len(train_set)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        before = _counters(model, backend, 0.0, 0, 0)
        batches = replica.batches(cfg, n, epoch)
        model.train()
        progress = _Progress(cfg.progress and replica.is_main, len(batches), f"epoch {epoch + 1}/{cfg.epochs}")
        loss_sum, correct, seen = 0.0, 0, 0
        for b, idx in enumerate(batches):
            x, y = train_set.images[idx], train_set.labels[idx]
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
        test_loss, test_acc = replica.evaluate(model, test_set)
        after = _counters(model, backend, loss_sum, correct, seen)
        delta = replica.reduce({k: after[k] - before.get(k, 0.0) for k in after})
        delta = {k: int(v) if k != "loss_sum" else v for k, v in delta.items()}
        row = {
            "epoch": epoch + 1,
            "train_loss": delta["loss_sum"] / delta["seen"],
            "train_accuracy": delta["correct"] / delta["seen"],
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "wall_s": time.perf_counter() - t0,
            "macs": delta.get("macs", 0),
            "gemms": delta.get("gemms", 0),
            "saturation_rate": delta["saturated"] / delta["outputs"] if delta.get("outputs") else 0.0,
            "activation_saturation_rate": (delta["activation_saturated"] / delta["activations"]
                                           if delta.get("activations") else 0.0),
            "gradient_saturation_rate": (delta["gradient_saturated"] / delta["gradients"]
                                         if delta.get("gradients") else 0.0),
        }
        history.append(row)
        log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, train acc {100 * row['train_accuracy']:.2f}%, "
            f"test acc {100 * test_acc:.2f}%, {row['wall_s']:.1f} s, {row['macs'] / 1e6:.1f} M MACs on the backend, "
            f"saturation {100 * row['saturation_rate']:.3f}%")
        random_state = replica.end_epoch(model, _random_state(fixed, backend))
        if replica.is_main:
            checkpoint = {
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **random_state,
                "replicas": replica.state_dict(),
                "history": history,
            }
            save_atomic(checkpoint, checkpoint_path)
            _write_metrics(out_dir, cfg, history, cfg.plot)
            if on_epoch is not None:
                on_epoch(row, checkpoint_path)
    return history
