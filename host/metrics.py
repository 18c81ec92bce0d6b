"""Per-epoch metrics of a training run on disk: JSON, CSV, a plot, and optionally TensorBoard scalars.

Members
-------
write_metrics
    ``metrics.json``, ``metrics.csv`` (each written atomically) and ``curves.png``.
TensorBoardLog
    Writes each epoch's metrics as TensorBoard scalars (``torch.utils.tensorboard``, the ``[tensorboard]`` extra).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

__all__ = ["write_metrics", "TensorBoardLog"]


def write_metrics(out_dir: Path, config: dict, history: list, fields, title: str, plot: bool) -> None:
    """``metrics.json`` (``config`` and ``history``), ``metrics.csv`` (columns ``fields``) and, with ``plot``,
    ``curves.png`` (train loss and test accuracy per epoch, titled ``title``) in ``out_dir``."""
    out_dir = Path(out_dir)
    with open(out_dir / "metrics.json.tmp", "w") as f:
        json.dump({"config": config, "epochs": history}, f, indent=1)
    os.replace(out_dir / "metrics.json.tmp", out_dir / "metrics.json")
    with open(out_dir / "metrics.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in fields})
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
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / "curves.png", dpi=100)
        plt.close(fig)


class TensorBoardLog:
    """TensorBoard scalars ``<tag>`` at step ``epoch`` for every numeric metric of an epoch, in ``log_dir``.

    Raises ValueError naming the extra when the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ValueError(f"--tensorboard needs the tensorboard package: pip install 'fxtrain[tensorboard]' "
                             f"({error})") from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def add_epoch(self, row: dict) -> None:
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, epoch)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
