"""``fxtrain compare``: the research line's table — float32, the fixed-point baseline and each approximate-training
method with its main settings, times seeds, on one backend.

Each run is an ordinary :func:`fxtrain.host.train.train` run in ``<out>/runs/<variant>-s<seed>`` (an existing
finished run is reused through ``resume``). The table has, per run, the final and best test accuracy, the
measured host seconds per epoch, the MACs sent to the backend per epoch (their mean over epochs; the float32
baseline sends none, its column holds the MACs it computes on the host; both include the evaluation's forward
passes) and the time model's prediction of
seconds per epoch on each board (board time: engine, link and exchanges, without the host term; the float32 row
has no board time). Written: ``results.csv`` (one row per run), ``summary.md`` (mean and spread over seeds per
variant) and ``compare.png`` (accuracy against host time, MACs and each board's predicted time).

Members
-------
VARIANTS : dict
    Variant name to ``(description, overrides)``: ``backend="float"`` or :class:`MethodConfig` fields.
CompareConfig
    The grid's settings (a JSON or TOML file or flags).
run_compare
    Run the grid, write the outputs; returns the rows.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .methods import MethodConfig
from .methods.gemms import method_gemms, predicted_epoch_s
from .models import build_model
from .train import TrainConfig, train

__all__ = ["VARIANTS", "CompareConfig", "run_compare", "load_compare_config"]

LOW_PRECISION = "8.6/8.4/8.8"

VARIANTS = {
    "float32": ("float32 baseline (host)", {"backend": "float"}),
    "fixed": ("fixed-point baseline", {}),
    "topk-fwd": ("column-row sampling, top-k, 50 % of input channels, forward", {"sampling": "topk"}),
    "crs-fwd": ("column-row sampling, CRS with replacement, 50 %, forward", {"sampling": "crs"}),
    "bernoulli-fwd": ("column-row sampling, Bernoulli-CRS, 50 %, forward", {"sampling": "bernoulli"}),
    "crs-bwd": ("column-row sampling, CRS, 50 %, backward only", {"sampling": "crs", "sample_mode": "backward"}),
    "grad-zero": ("weight gradient zero, every 4th conv from the 2nd", {"gradapprox": "zero"}),
    "grad-random": ("weight gradient random, every 4th conv from the 2nd", {"gradapprox": "random"}),
    "grad-top1": ("weight gradient top-1, every 4th conv from the 2nd", {"gradapprox": "top1"}),
    "rescale2": ("kernel rescaling s = 2, the first third of the epochs (at least one)", {"rescale_factor": 2}),
    "precision": (f"operands {LOW_PRECISION} for the first half of the epochs, the run's formats after",
                  {"precision_schedule": None}),
}

DEFAULT_BOARDS = ("icebreaker", "ulx3s-85f")


@dataclass
class CompareConfig:
    """Settings of a comparison; unknown keys in a file are an error.

    ``variants``: names from :data:`VARIANTS` (default all); ``seeds``: one run per seed and variant;
    ``train``: extra :class:`TrainConfig` fields for every run (e.g. ``{"lr": 0.02}``).
    """

    model: str = "lenet"
    backend: str = "emu:fast"
    data: "str | None" = None
    epochs: int = 2
    seeds: list = field(default_factory=lambda: [0])
    variants: list = field(default_factory=lambda: list(VARIANTS))
    train_limit: "int | None" = None
    test_limit: "int | None" = None
    batch_size: int = 64
    boards: list = field(default_factory=lambda: list(DEFAULT_BOARDS))
    out_dir: str = "runs/compare"
    train: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"Unknown variants {unknown}; known: {', '.join(VARIANTS)}")
        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty list of non-negative integers, not {self.seeds!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, not {self.epochs!r}")
        bad = set(self.train) - {f.name for f in fields(TrainConfig)}
        if bad:
            raise ValueError(f"Unknown TrainConfig fields in 'train': {sorted(bad)}")

    def train_config(self, variant: str, seed: int) -> TrainConfig:
        overrides = dict(VARIANTS[variant][1])
        backend = overrides.pop("backend", self.backend)
        if "precision_schedule" in overrides:
            base = self.train.get("weights", "16.14"), self.train.get("activations", "16.10"), \
                self.train.get("gradients", "16.14")
            switch = max(1, math.ceil(self.epochs / 2))
            overrides["precision_schedule"] = f"0:{LOW_PRECISION},{switch}:{'/'.join(base)}"
        if "rescale_factor" in overrides:
            overrides["rescale_epochs"] = max(1, self.epochs // 3)
        settings = dict(model=self.model, data=self.data, backend=backend, epochs=self.epochs, seed=seed,
                        train_limit=self.train_limit, test_limit=self.test_limit, batch_size=self.batch_size,
                        out_dir=str(Path(self.out_dir) / "runs" / f"{variant}-s{seed}"), progress=False, plot=False,
                        methods=MethodConfig(**overrides))
        settings.update(self.train)
        return TrainConfig(**settings)


def load_compare_config(path, **overrides) -> CompareConfig:
    """A :class:`CompareConfig` from a ``.json`` or ``.toml`` file, then ``overrides`` (None values ignored)."""
    data = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Compare config {path} does not exist")
        text = path.read_text()
        if path.suffix == ".toml":
            try:
                import tomllib   # Python 3.11+
            except ImportError:
                raise ValueError(f"Reading {path} needs Python 3.11's tomllib; use a .json config") from None
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
        unknown = set(data) - {f.name for f in fields(CompareConfig)}
        if unknown:
            raise ValueError(f"Unknown keys in {path}: {sorted(unknown)}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return CompareConfig(**data)


def _nominal_macs(cfg: TrainConfig, input_shape, train_size: int, test_size: int) -> float:
    """MACs of a plain epoch, training and evaluation (what the float baseline computes on the host, and what
    the backend counters of a fixed-point run count)."""
    model = build_model(cfg.model, 0, in_channels=input_shape[0])
    steps, rem = divmod(train_size, cfg.batch_size)
    per = sum(g.macs for g in method_gemms(model, input_shape, cfg.batch_size, MethodConfig()))
    last = sum(g.macs for g in method_gemms(model, input_shape, rem, MethodConfig())) if rem else 0
    evaluation = sum(g.macs for g in method_gemms(model, input_shape, 1, MethodConfig()) if g.kind == "forward")
    return per * steps + last + evaluation * test_size


def _run_one(cc: CompareConfig, variant: str, seed: int, log):
    cfg = cc.train_config(variant, seed)
    resume = (cfg.output_dir / "checkpoint.pt").is_file()
    cfg.resume = resume
    history = train(cfg, log=log)
    from .datasets import load_data
    train_set, test_set = load_data(cfg.data)
    train_size = min(len(train_set), cfg.train_limit or len(train_set))
    test_size = min(len(test_set), cfg.test_limit or len(test_set))
    input_shape = tuple(train_set.images.shape[1:])
    row = {
        "variant": variant, "seed": seed, "model": cfg.model, "backend": cfg.backend, "epochs": len(history),
        "final_accuracy": history[-1]["test_accuracy"],
        "best_accuracy": max(r["test_accuracy"] for r in history),
        "host_s_per_epoch": statistics.fmean(r["wall_s"] for r in history),
        "macs_per_epoch": statistics.fmean(r["macs"] for r in history),
    }
    if cfg.backend == "float":
        row["macs_per_epoch"] = _nominal_macs(cfg, input_shape, train_size, test_size)
    model = build_model(cfg.model, 0, in_channels=input_shape[0])
    for board in cc.boards:
        row[f"predicted_s_{board}"] = (float("nan") if cfg.backend == "float" else predicted_epoch_s(
            board, model, input_shape, cfg.batch_size, train_size, cfg.weights, cfg.methods, cfg.epochs))
    return row


def _summary(rows, boards):
    out = {}
    for row in rows:
        out.setdefault(row["variant"], []).append(row)
    table = []
    for variant, runs in out.items():
        def stat(key):
            values = [r[key] for r in runs]
            if any(math.isnan(v) for v in values):   # float32 has no board time
                return math.nan, math.nan
            return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
        entry = {"variant": variant, "runs": len(runs)}
        for key in ("final_accuracy", "best_accuracy", "host_s_per_epoch", "macs_per_epoch") + tuple(
                f"predicted_s_{b}" for b in boards):
            entry[key] = stat(key)
        table.append(entry)
    return table


def _markdown(cc, table):
    fixed = next((e for e in table if e["variant"] == "fixed"), None)
    lines = [f"{cc.model} on {'the embedded MNIST subset' if cc.data is None else cc.data}, backend {cc.backend}, "
             f"{cc.epochs} epochs, seeds {cc.seeds}, batch {cc.batch_size}", "",
             "| variant | final acc (%) | best acc (%) | host s/epoch | MACs/epoch (M) | MACs vs fixed |"
             + "".join(f" predicted s/epoch {b} |" for b in cc.boards),
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(cc.boards)]
    for e in table:
        (fa, fs), (ba, bs) = e["final_accuracy"], e["best_accuracy"]
        ratio = e["macs_per_epoch"][0] / fixed["macs_per_epoch"][0] if fixed else float("nan")
        preds = "".join(" — |" if math.isnan(e[f"predicted_s_{b}"][0]) else f" {e[f'predicted_s_{b}'][0]:.4g} |"
                        for b in cc.boards)
        lines.append(f"| {e['variant']} | {100 * fa:.2f} ± {100 * fs:.2f} | {100 * ba:.2f} ± {100 * bs:.2f} | "
                     f"{e['host_s_per_epoch'][0]:.2f} | {e['macs_per_epoch'][0] / 1e6:.1f} | {ratio:.2f} |{preds}")
    lines += ["", "Variants: " + "; ".join(f"**{v}**: {VARIANTS[v][0]}" for v in cc.variants) + "."]
    return "\n".join(lines) + "\n"


def _plot(path, cc, table):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes_keys = [("host_s_per_epoch", "measured host s / epoch"), ("macs_per_epoch", "MACs / epoch")] + [
        (f"predicted_s_{b}", f"predicted s / epoch, {b}") for b in cc.boards]
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(4 * len(axes_keys), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], axes_keys):
        for e in table:
            x = e[key][0]
            if math.isnan(x):
                continue
            ax.errorbar(x, 100 * e["final_accuracy"][0], yerr=100 * e["final_accuracy"][1], fmt="o", capsize=2)
            ax.annotate(e["variant"], (x, 100 * e["final_accuracy"][0]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("final test accuracy (%)")
    fig.suptitle(f"{cc.model}, backend {cc.backend}, {cc.epochs} epochs, seeds {cc.seeds}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_compare(cc: CompareConfig, log=print):
    """Run the grid of ``cc`` (variants x seeds), write ``results.csv``, ``summary.md``, ``compare.png`` and
    ``compare.json`` in ``cc.out_dir``; returns the per-run rows."""
    out = Path(cc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in cc.variants:
        for seed in cc.seeds:
            log(f"compare: {variant}, seed {seed}")
            rows.append(_run_one(cc, variant, seed, log))
    table = _summary(rows, cc.boards)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.md").write_text(_markdown(cc, table))
    (out / "compare.json").write_text(json.dumps({"config": asdict(cc), "runs": rows}, indent=1))
    _plot(out / "compare.png", cc, table)
    return rows
