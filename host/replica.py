"""The hooks through which :func:`fxtrain.host.train.train` runs its steps: :class:`LocalReplica`, one process
(the defaults); :class:`fxtrain.host.distributed.Replicas` overrides them for one rank of a data-parallel run.

Members
-------
LocalReplica
    The single-process hooks.
epoch_seed
    Seed of an epoch's shuffle (the same in one process and under ``DistributedSampler``).
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["LocalReplica", "epoch_seed"]


class LocalReplica:
    """How :func:`fxtrain.host.train.train` runs in one process; :class:`fxtrain.host.distributed.Replicas` overrides these hooks for
    data-parallel training (one replica per rank).

    ``rank``/``world_size``/``is_main``; ``seed(cfg)`` seeds this replica's backend and quantizers;
    ``backend_spec(cfg)`` its backend; ``setup`` returns the module that takes the training steps;
    ``batches`` the index tensors of this replica's batches in an epoch; ``after_step`` runs after each optimizer
    step; ``reduce`` sums a dict of counters over the replicas; ``evaluate`` the test loss and accuracy;
    ``load``/``end_epoch``/``restore`` move checkpoints and per-replica random states.
    """

    rank, world_size, is_main = 0, 1, True

    def seed(self, cfg):
        return cfg.seed

    def backend_spec(self, cfg):
        return cfg.backend

    def setup(self, cfg, model, fixed):
        return model

    def batches(self, cfg, n, epoch):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)))
        return [order[start:start + cfg.batch_size] for start in range(0, n, cfg.batch_size)]

    def after_step(self, model, step):
        pass

    def reduce(self, counters: dict) -> dict:
        return counters

    def evaluate(self, model, dataset):
        from .train import evaluate  # train imports this module
        return evaluate(model, dataset)

    def load(self, path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"Cannot resume: no checkpoint at {path}")
        return torch.load(path, weights_only=False)

    def end_epoch(self, model, state: dict) -> dict:
        """The checkpoint entries of this replica's random state ``state`` (rank 0's view of all replicas)."""
        return state

    def restore(self, checkpoint: dict) -> "dict | None":
        """This replica's random state out of ``checkpoint``; None if it holds none for this replica."""
        return checkpoint

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the shuffle of ``epoch`` (the same in one process and under DistributedSampler)."""
    return seed * 1_000_003 + epoch
