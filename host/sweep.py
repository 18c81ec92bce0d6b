"""Sweeps of ``fxtrain train`` over hyper-parameters and seeds on Ray Tune, with ASHA early stopping.

Needs the optional extra: ``pip install 'fxtrain[sweep]'`` (Ray is imported only inside the functions that use it).

A trial is one normal training run (:func:`fxtrain.host.train.train`) of a :class:`TrainConfig` whose fields come
from the trial's Tune config. After each epoch the trial reports that epoch's metrics row to Tune together with a
Tune checkpoint holding ``checkpoint.pt`` (written atomically by the training) and the metrics files; a restored
trial copies its last checkpoint back and continues with ``resume=True``, exactly as ``fxtrain train --resume``.

Search space (:func:`parse_values`), for any :class:`TrainConfig` field but the output ones:

* ``0.01,0.05,0.1`` — grid over these values (every combination of all grid fields is a trial);
* ``uniform:LO:HI``, ``loguniform:LO:HI``, ``randint:LO:HI`` (HI excluded), ``choice:A,B,C`` — random search,
  ``num_samples`` draws (with grid fields too: ``num_samples`` draws per grid point);
* a single value — the same for every trial.

Resources: an emulator trial takes ``cpus_per_trial`` CPUs; a board trial also takes one unit of the custom
resource :data:`fxtrain.host.board_pool.BOARD_RESOURCE` and, on its node, leases one port of ``boards`` with
:class:`fxtrain.host.board_pool.BoardLease`; its backend is ``board_spec.format(port=port)``.

Members
-------
SWEEPABLE
    TrainConfig fields a sweep may vary.
parse_values
    A flag value to a constant or a Tune search domain.
load_space
    A JSON/TOML space file to a dict of field -> value (same syntax, or lists for grids).
SweepConfig
    Everything a sweep depends on besides the space.
run_trial
    The Tune trainable.
run_sweep
    Start (or resume) the sweep; returns the trial rows (:mod:`fxtrain.host.sweep_report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .board_pool import BOARD_RESOURCE, BoardLease
from .methods import MethodConfig
from .train import TrainConfig, train

__all__ = ["SWEEPABLE", "parse_values", "trial_config", "load_space", "SweepConfig", "run_trial", "run_sweep"]

_OUTPUT_FIELDS = ("out_dir", "name", "resume", "progress", "plot", "tensorboard")
#: The approximate-training options (``fxtrain train --sampling`` ...) are swept by their MethodConfig field names.
_METHOD_FIELDS = {f.name: f for f in dataclasses.fields(MethodConfig)}
SWEEPABLE = {**{f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in _OUTPUT_FIELDS + ("methods",)},
             **_METHOD_FIELDS}
_RANDOM = ("uniform", "loguniform", "randint", "choice")


def _field_type(name):
    """``int``, ``float``, ``bool`` or ``str`` for a TrainConfig or MethodConfig field (from its default)."""
    default = (_METHOD_FIELDS[name] if name in _METHOD_FIELDS else TrainConfig.__dataclass_fields__[name]).default
    if isinstance(default, bool):
        return _boolean
    if isinstance(default, (int, float)):
        return type(default)
    return int if name.endswith("_limit") else str


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def _convert(name, text):
    kind = _field_type(name)
    try:
        return kind(text)
    except ValueError:
        label = "boolean (true or false)" if kind is _boolean else kind.__name__
        raise ValueError(f"Sweep value {text!r} for {name} is not a{'n' if kind is int else ''} {label}") from None


def parse_values(name: str, value):
    """A constant, ``tune.grid_search([...])`` or a Tune random domain for field ``name`` (module docstring).

    ``value`` is a flag string, or (from a space file) a number, a list (grid) or such a string.
    """
    from ray import tune

    if name not in SWEEPABLE:
        raise ValueError(f"Cannot sweep {name!r}: sweepable options are {', '.join(sorted(SWEEPABLE))}")
    if isinstance(value, list):
        return tune.grid_search([_convert(name, v) if isinstance(v, str) else v for v in value])
    if not isinstance(value, str):
        return value
    kind, _, rest = value.partition(":")
    if kind in _RANDOM and rest:
        if kind == "choice":
            return tune.choice([_convert(name, v) for v in rest.split(",")])
        parts = rest.split(":")
        if len(parts) != 2:
            raise ValueError(f"{name}={value!r}: {kind} needs LO:HI")
        lo, hi = (_convert(name, p) for p in parts)
        if not lo < hi:
            raise ValueError(f"{name}={value!r}: LO must be below HI")
        return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](lo, hi)
    values = value.split(",")
    if len(values) > 1:
        return tune.grid_search([_convert(name, v) for v in values])
    return _convert(name, value)


def trial_config(config: dict, **outputs) -> TrainConfig:
    """The TrainConfig of a trial whose Tune config (fields of :data:`SWEEPABLE`) is ``config``: the method fields
    go into its MethodConfig, the rest (and ``outputs``) into the TrainConfig."""
    methods = MethodConfig(**{k: v for k, v in config.items() if k in _METHOD_FIELDS})
    return TrainConfig(**{k: v for k, v in config.items() if k not in _METHOD_FIELDS}, methods=methods, **outputs)


def load_space(path) -> dict:
    """Field -> value from a ``.json`` or ``.toml`` file (values as in :func:`parse_values`)."""
    path = Path(path)
    if path.suffix == ".toml":
        import tomllib
        with open(path, "rb") as f:
            space = tomllib.load(f)
    elif path.suffix == ".json":
        space = json.loads(path.read_text())
    else:
        raise ValueError(f"Space file {path} must be .json or .toml")
    if not isinstance(space, dict):
        raise ValueError(f"Space file {path} must hold a table of option = values")
    return {k.replace("-", "_"): v for k, v in space.items()}


@dataclass
class SweepConfig:
    """A sweep (module docstring).

    ``space``: field -> constant or Tune domain; ``out_dir``: the sweep directory (Tune's storage, trial
    checkpoints, the table and plot); ``num_samples``; ``asha`` with ``grace_period`` and ``reduction_factor``;
    ``metric``/``mode``; ``cpus_per_trial``; ``boards`` (ports) and ``board_spec``; ``max_concurrent``;
    ``address`` of a Ray cluster (None: a local instance with ``num_cpus``); ``resume``; ``lock_dir`` of the
    board leases.
    """

    space: dict
    out_dir: str
    num_samples: int = 1
    asha: bool = True
    grace_period: int = 1
    reduction_factor: float = 2
    metric: str = "test_accuracy"
    mode: str = "max"
    cpus_per_trial: float = 1
    boards: list = field(default_factory=list)
    board_spec: str = "serial:{port}@3000000"
    max_concurrent: "int | None" = None
    address: "str | None" = None
    num_cpus: "int | None" = None
    resume: bool = False
    lock_dir: "str | None" = None

    @property
    def name(self) -> str:
        return Path(self.out_dir).resolve().name

    @property
    def storage(self) -> Path:
        return Path(self.out_dir).resolve() / "tune"


def _report_epoch(row, checkpoint_path, extra):
    """Report one epoch with a Tune checkpoint of the run's files."""
    from ray import tune

    staging = Path(tempfile.mkdtemp(prefix="fxtrain-ckpt-"))
    try:
        for name in ("checkpoint.pt", "metrics.csv", "metrics.json"):
            source = checkpoint_path.parent / name
            if source.exists():
                shutil.copy2(source, staging / name)
        tune.report({**row, **extra, "reported_at": time.time()}, checkpoint=tune.Checkpoint.from_directory(str(staging)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_trial(config: dict) -> None:
    """Tune trainable: one training run of ``config`` (TrainConfig fields plus ``_sweep``: boards, board_spec,
    lock_dir, threads), resumed from the trial's last Tune checkpoint if there is one."""
    from ray import tune

    config = dict(config)
    sweep = config.pop("_sweep")
    torch.set_num_threads(max(1, int(sweep["threads"])))
    trial_id = tune.get_context().get_trial_id()
    out_dir = Path.cwd() / "run"
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"restored_epoch": 0, "board": ""}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            for item in Path(directory).iterdir():
                shutil.copy2(item, out_dir / item.name)
        extra["restored_epoch"] = int(torch.load(out_dir / "checkpoint.pt", weights_only=False)["epoch"])
    lease = None
    if sweep["boards"]:
        lease = BoardLease(sweep["boards"], holder=trial_id, lock_dir=sweep["lock_dir"])
        config["backend"] = sweep["board_spec"].format(port=lease.port)
        extra["board"] = lease.port
    try:
        cfg = trial_config(config, out_dir=str(out_dir), name=trial_id, resume=checkpoint is not None,
                           progress=False, plot=False)
        train(cfg, log=lambda message: None, on_epoch=lambda row, path: _report_epoch(row, path, extra))
    finally:
        if lease is not None:
            lease.release()


def _resources(sweep: SweepConfig) -> dict:
    resources = {"cpu": sweep.cpus_per_trial}
    if sweep.boards:
        resources[BOARD_RESOURCE] = 1
    return resources


def _init_ray(sweep: SweepConfig):
    """Connect to ``sweep.address`` or start a local instance (with one board resource per port); returns
    whether this call started Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if sweep.address:
        ray.init(address=sweep.address, **options)
    else:
        resources = {BOARD_RESOURCE: len(sweep.boards)} if sweep.boards else None
        ray.init(num_cpus=sweep.num_cpus, resources=resources, **options)
    return True


def run_sweep(sweep: SweepConfig, log=print):
    """Run (or with ``sweep.resume`` continue) the sweep; returns the ``ray.tune.ResultGrid``."""
    # Every epoch is a checkpoint; Tune's warning about frequent experiment snapshots is expected noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    space = dict(sweep.space)
    if sweep.boards:
        space.pop("backend", None)
    epochs = space.get("epochs", TrainConfig.epochs)
    max_t = max(epochs["grid_search"]) if isinstance(epochs, dict) else epochs
    if not isinstance(max_t, int):
        raise ValueError("A sweep's epochs must be a number or a grid of numbers (ASHA needs the maximum)")
    space["_sweep"] = {"boards": list(sweep.boards), "board_spec": sweep.board_spec, "lock_dir": sweep.lock_dir,
                       "threads": sweep.cpus_per_trial}
    trainable = tune.with_resources(run_trial, _resources(sweep))
    started = _init_ray(sweep)
    try:
        if sweep.resume:
            path = sweep.storage / "sweep"
            if not tune.Tuner.can_restore(str(path)):
                raise FileNotFoundError(f"Cannot resume: no sweep state in {path}")
            log(f"resuming the sweep in {path}")
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=sweep.grace_period,
                                       reduction_factor=sweep.reduction_factor)
                         if sweep.asha else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, scheduler=scheduler,
                                            num_samples=sweep.num_samples,
                                            max_concurrent_trials=sweep.max_concurrent),
                run_config=tune.RunConfig(name="sweep", storage_path=str(sweep.storage), verbose=0,
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        tuner.fit()
        # The experiment state on disk has each trial's final status (an interrupted sweep's trials are PAUSED or
        # PENDING there, while the grid fit() returns after Ctrl-C already calls them TERMINATED).
        return tune.Tuner.restore(str(sweep.storage / "sweep"), trainable).get_results()
    finally:
        if started:
            ray.shutdown()

