"""The outcome of a sweep (:mod:`fxtrain.host.sweep`): one row per trial, as CSV, Markdown and a plot.

Files written in the sweep directory by :func:`write_report`:

* ``trials.csv`` / ``trials.md`` — per trial: ``trial``, the swept options, ``status`` (``completed``,
  ``stopped early`` by the scheduler, ``error``, ``unfinished`` in an interrupted sweep), ``epochs`` run, ``best_test_accuracy``, ``last_test_accuracy``,
  ``train_s`` (sum of the epochs' wall time), ``restored_epoch`` (the epoch a resumed trial continued from),
  ``board``;
* ``accuracy_vs_time.png`` — test accuracy of every trial against wall-clock time since the sweep's first trial
  started (early-stopped trials end early).

Members
-------
trial_rows
    Rows of a ``ray.tune.ResultGrid``.
summarize
    Totals of the rows: trials completed / stopped / failed, epochs run out of the epochs asked for, best trial.
write_report
    The three files.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["trial_rows", "summarize", "write_report"]


def _series(result):
    frame = result.metrics_dataframe
    if frame is None or frame.empty or "test_accuracy" not in frame:
        return []
    frame = frame.dropna(subset=["test_accuracy"]).drop_duplicates(subset=["epoch"], keep="last")
    return frame.sort_values("epoch").to_dict("records")


def trial_rows(results, swept) -> list:
    """One dict per trial of ``results`` (a ResultGrid), with the options named in ``swept``, in trial order."""
    rows = []
    # Tune's trial status (TERMINATED, ERROR, PAUSED, ...) is not on the public Result; the ResultGrid keeps the
    # trials in the same order as its results.
    trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None)
    statuses = [t.status for t in trials] if trials is not None else [None] * len(results)
    for result, tune_status in zip(results, statuses):
        config, series = result.config or {}, _series(result)
        planned = config.get("epochs")
        done = int(series[-1]["epoch"]) if series else 0
        if result.error is not None or tune_status == "ERROR":
            status = "error"
        elif tune_status not in (None, "TERMINATED"):
            status = "unfinished"
        elif planned is not None and done < planned:
            status = "stopped early"
        else:
            status = "completed"
        accuracies = [row["test_accuracy"] for row in series]
        row = {"trial": (result.metrics or {}).get("trial_id") or (Path(result.path).name if result.path else "")}
        row.update({name: config.get(name) for name in swept})
        row.update(status=status, epochs=done, planned_epochs=planned,
                   best_test_accuracy=max(accuracies) if accuracies else None,
                   last_test_accuracy=accuracies[-1] if accuracies else None,
                   train_s=round(sum(r["wall_s"] for r in series), 2),
                   restored_epoch=int(max((r.get("restored_epoch") or 0) for r in series)) if series else 0,
                   board=series[-1].get("board", "") if series else "",
                   error=str(result.error).splitlines()[0][:200] if result.error is not None else "")
        row["_series"] = [(r["reported_at"], r.get("wall_s", 0.0), r["test_accuracy"]) for r in series]
        rows.append(row)
    return sorted(rows, key=lambda r: str(r["trial"]))


def summarize(rows) -> dict:
    """``trials``, ``completed``, ``stopped_early``, ``errors``, ``unfinished``, ``epochs_run``, ``epochs_planned``,
    ``best_trial``, ``best_test_accuracy``."""
    best = max((r for r in rows if r["best_test_accuracy"] is not None), key=lambda r: r["best_test_accuracy"],
               default=None)
    return {
        "trials": len(rows),
        "completed": sum(r["status"] == "completed" for r in rows),
        "stopped_early": sum(r["status"] == "stopped early" for r in rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "unfinished": sum(r["status"] == "unfinished" for r in rows),
        "epochs_run": sum(r["epochs"] for r in rows),
        "epochs_planned": sum(r["planned_epochs"] or 0 for r in rows),
        "best_trial": best["trial"] if best else None,
        "best_test_accuracy": best["best_test_accuracy"] if best else None,
    }


def _public(rows):
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def _write_text(path, text):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(out_dir, rows, title="sweep") -> dict:
    """Write ``trials.csv``, ``trials.md`` and ``accuracy_vs_time.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    public = _public(rows)
    fields = list(public[0]) if public else ["trial"]
    tmp = out_dir / f".trials.csv.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(public)
    os.replace(tmp, out_dir / "trials.csv")

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(cell(row[k]) for k in fields) + " |" for row in public]
    _write_text(out_dir / "trials.md", "\n".join(lines) + "\n")
    _plot(out_dir / "accuracy_vs_time.png", rows, title)
    return {"csv": out_dir / "trials.csv", "markdown": out_dir / "trials.md", "plot": out_dir / "accuracy_vs_time.png"}


def _plot(path, rows, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [r["_series"][0][0] - r["_series"][0][1] for r in rows if r["_series"]]
    origin = min(starts) if starts else 0.0
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        if not row["_series"]:
            continue
        times = [t - origin for t, _, _ in row["_series"]]
        style = "--" if row["status"] == "stopped early" else "-"
        ax.plot(times, [100 * a for _, _, a in row["_series"]], style, marker="o", markersize=3,
                label=f"{row['trial']} ({row['status']})")
    ax.set_xlabel("wall-clock time since the sweep's first trial started (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
