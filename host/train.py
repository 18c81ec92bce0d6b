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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..sim.rounding import parse_mode
from .backend import open_backend
from .convert import convert, get_offload, offload_stats
from .datasets import load_data
from .layers import DEFAULT_FORMATS, FixedConfig, _FixedMixin
from .metrics import TensorBoardLog, write_metrics
from .models import build_model
from .progress import EpochProgress

__all__ = ["TrainConfig", "build", "train", "evaluate", "save_atomic", "METRIC_FIELDS"]

METRIC_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_s", "macs", "gemms",
                 "saturation_rate", "activation_saturation_rate", "gradient_saturation_rate")

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
        Show a progress bar on stderr (only when it is a terminal).
    plot : bool
        Write ``curves.png``.
    tensorboard : str, optional
        Directory for TensorBoard scalars (module docstring).
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
    tensorboard: "str | None" = None

    def __post_init__(self):
        self.rounding = str(parse_mode(self.rounding))
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


def build(cfg: TrainConfig):
    """``(model, backend, offload, optimizer, train_set, test_set)`` for ``cfg``; ``backend`` and ``offload`` are
    None for the float baseline. The caller closes ``backend``."""
    train_set, test_set = load_data(cfg.data)
    if cfg.train_limit:
        train_set = train_set.subset(cfg.train_limit)
    if cfg.test_limit:
        test_set = test_set.subset(cfg.test_limit)
    model = build_model(cfg.model, cfg.seed)
    backend = open_backend(cfg.backend, seed=cfg.seed)
    offload = None
    if backend is not None:
        try:
            fixed = FixedConfig(cfg.weights, cfg.activations, cfg.gradients, rounding=cfg.rounding,
                                master_weights=cfg.master_weights, wl=backend.config.wl)
            offload = get_offload(convert(model, backend, fixed, seed=cfg.seed))
        except BaseException:
            backend.close()
            raise
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return model, backend, offload, optimizer, train_set, test_set


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


def _backend_counters(backend):
    return dict(backend.counters) if backend is not None else {}


def train(cfg: TrainConfig, log=print) -> list:
    """Run ``cfg`` (module docstring); returns the per-epoch metrics (all epochs, resumed ones included).

    Raises FileNotFoundError if ``resume`` is set and there is no checkpoint, ValueError if the checkpoint was
    written by a run with different numerics. The backend is closed at the end, also on an error.
    """
    out_dir = cfg.output_dir
    model, backend, offload, optimizer, train_set, test_set = build(cfg)
    board = None
    try:
        history = _restore(cfg, model, backend, offload, optimizer, log) if cfg.resume else []
        if not cfg.resume:
            torch.manual_seed(cfg.seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard:
            board = TensorBoardLog(Path(cfg.tensorboard) / cfg.run_name)
        numerics = next(iter(_fixed_layers(model))).fixed.describe() if offload is not None else "float32"
        log(f"{cfg.run_name}: {cfg.model} on {train_set.name} ({len(train_set)} train / {len(test_set)} test), "
            f"backend {cfg.backend}, {numerics}; output {out_dir}")
        for epoch in range(len(history), cfg.epochs):
            row = _train_epoch(cfg, epoch, model, backend, optimizer, train_set, test_set)
            history.append(row)
            log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, train acc "
                f"{100 * row['train_accuracy']:.2f}%, test acc {100 * row['test_accuracy']:.2f}%, "
                f"{row['wall_s']:.1f} s, {row['macs'] / 1e6:.1f} M MACs on the backend, "
                f"saturation {100 * row['saturation_rate']:.3f}%")
            checkpoint = {
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.random.get_rng_state(),
                "quantizer_rng": offload.generator.get_state() if offload is not None else None,
                "backend": backend.state_dict() if backend is not None else None,
                "history": history,
            }
            save_atomic(checkpoint, out_dir / "checkpoint.pt")
            write_metrics(out_dir, asdict(cfg), history, METRIC_FIELDS, cfg.run_name, cfg.plot)
            if board is not None:
                board.add_epoch(row)
    finally:
        if board is not None:
            board.close()
        if backend is not None:
            backend.close()
    return history


def _fixed_layers(model):
    return [m for m in model.modules() if isinstance(m, _FixedMixin)]


def _restore(cfg, model, backend, offload, optimizer, log) -> list:
    """Load ``cfg``'s checkpoint into the run; returns the history so far."""
    checkpoint_path = cfg.output_dir / "checkpoint.pt"
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"Cannot resume: no checkpoint at {checkpoint_path}")
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    saved = {k: v for k, v in checkpoint["config"].items() if k not in _RESUMABLE}
    current = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE}
    if saved != current:
        diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
        raise ValueError(f"Checkpoint {checkpoint_path} is from a different run (saved vs now: {diff})")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.random.set_rng_state(checkpoint["torch_rng"])
    if offload is not None:
        offload.generator.set_state(checkpoint["quantizer_rng"])
        if checkpoint["backend"] is not None and backend.restores_state:
            backend.load_state_dict(checkpoint["backend"])
        else:
            log(f"warning: backend {cfg.backend!r} cannot restore its random state; the resumed run is "
                f"statistically, not bit for bit, equivalent")
    history = checkpoint["history"]
    if len(history) != checkpoint["epoch"]:
        raise ValueError(f"Checkpoint {checkpoint_path} is inconsistent: epoch {checkpoint['epoch']} but "
                         f"{len(history)} rows of history")
    log(f"resuming {cfg.run_name} after epoch {checkpoint['epoch']}")
    return history


def _train_epoch(cfg, epoch, model, backend, optimizer, train_set, test_set) -> dict:
    """One epoch of SGD (module docstring) and the evaluation after it; returns the epoch's metrics row."""
    n = len(train_set)
    batches = -(-n // cfg.batch_size)
    t0 = time.perf_counter()
    before = _backend_counters(backend)
    stats_before = offload_stats(model)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    model.train()
    loss_sum, correct = 0.0, 0
    with EpochProgress(cfg.progress, batches, f"epoch {epoch + 1}/{cfg.epochs}") as progress:
        for b in range(batches):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = train_set.images[idx], train_set.labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            progress.update(b + 1, loss_sum / min(n, (b + 1) * cfg.batch_size))
    test_loss, test_acc = evaluate(model, test_set)
    after = _backend_counters(backend)
    stats = offload_stats(model)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("macs", "gemms", "outputs", "saturated")}
    sdelta = {k: stats.get(k, 0) - stats_before.get(k, 0) for k in stats}
    return {
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
