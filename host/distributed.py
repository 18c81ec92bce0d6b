"""Data-parallel training on ``torch.distributed``: one replica of the model per rank, each with its own backend.

Launch with torchrun (one process per rank; ``--nnodes``/``--rdzv-endpoint`` for several hosts)::

    torchrun --nproc-per-node 2 -m fxtrain.host.cli train --distributed --backend emu
    torchrun --nproc-per-node 2 --no-python fxtrain train --distributed --backend emu

How a step runs on ``W`` ranks (``docs/scale-out.md``):

* **data** — :class:`torch.utils.data.DistributedSampler` over the train split, seeded as the single-process
  shuffle (:func:`fxtrain.host.replica.epoch_seed`), so rank ``r`` takes positions ``r, r + W, …`` of the same
  permutation; ``--batch-size`` is the *global* batch and each rank takes ``batch_size / W`` of it, so the
  ranks of one step together see exactly the images one process would see in that step;
* **backend** — each rank opens its own backend: ``--backend`` is one spec for all ranks or a comma-separated
  list indexed by the local rank (``serial:/dev/ttyUSB0,serial:/dev/ttyUSB1``); its LFSR lanes and host
  quantizers are seeded with :func:`rank_seed` (``seed`` on rank 0, ``seed + r * 2**32`` on rank ``r``), so the
  ranks draw independent rounding noise;
* **gradients** — :class:`torch.nn.parallel.DistributedDataParallel` (gloo) all-reduces and averages them, so
  every rank applies the same float update to the same weights;
* **fixed-point master weights** — the update is rounded back onto the weight grid right after
  ``optimizer.step()`` by every rank with the *same* generator (:func:`update_seed`, shared by the ranks, saved
  in the checkpoint), not by the rank's own quantizer generator: same input, same generator state, same
  rounding, so the replicas stay bit-identical with no extra communication. The forward pass then finds the
  weights on the grid, where stochastic rounding changes nothing (:mod:`fxtrain.host.quantize`). Every epoch (or
  every ``check_every`` steps) the ranks compare a SHA-256 of their parameters and stop with an error if they
  differ;
* **metrics** — train loss/accuracy and the offload counters are summed over the ranks; the test split is
  sharded over the ranks and its loss and accuracy summed;
* **checkpoints** — rank 0 writes them (atomically, :func:`fxtrain.host.train.save_atomic`) with every rank's
  random state (torch, quantizer, backend lanes) gathered to it; on ``--resume`` rank 0 reads the checkpoint and
  broadcasts it, so it only has to exist on rank 0's host;
* **failure** — a rank that raises prints ``rank R/W failed: …`` and exits non-zero; torchrun then stops the
  other ranks. A rank that never arrives or stops answering makes the others fail after ``timeout_s``
  (process-group timeout, default 300 s) instead of hanging.

Members
-------
Replicas
    The :class:`fxtrain.host.train.LocalReplica` hooks for one rank of a data-parallel run.
rank_seed, update_seed
    Seeds of a rank's backend and quantizers, and of the shared update rounding.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .layers import FixedConv2d, FixedLinear
from .quantize import quantize_raw
from .replica import LocalReplica, epoch_seed
from .train import _RESUMABLE

__all__ = ["Replicas", "rank_seed", "update_seed", "ENV_VARS"]

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s backend lanes and host quantizers: ``seed`` on rank 0, so one rank reproduces the
    single-process lanes."""
    return seed + rank * 2 ** 32


def update_seed(seed: int) -> int:
    """Seed of the generator that rounds the update of fixed-point master weights, the same on every rank."""
    return (seed + 0x9E3779B97F4A7C15) % 2 ** 64


class Replicas(LocalReplica):
    """One rank of a data-parallel run (module docstring); the process group must be initialised (or use
    :meth:`from_env`).

    Parameters
    ----------
    check_every : int
        Compare the replicas' parameters every this many steps (0: only at the end of each epoch).
    """

    def __init__(self, check_every: int = 0):
        if not dist.is_initialized():
            raise RuntimeError("Replicas needs an initialised torch.distributed process group (use from_env)")
        if check_every < 0:
            raise ValueError(f"check_every must be >= 0, not {check_every!r}")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.is_main = self.rank == 0
        self.check_every = check_every
        self.update_generator = None
        self.fixed = None
        self.steps = 0

    @classmethod
    def from_env(cls, timeout_s: float = 300.0, **options) -> "Replicas":
        """Join the gloo process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
        ``MASTER_ADDR``, ``MASTER_PORT``); a rank that is missing for ``timeout_s`` seconds makes it fail."""
        missing = [name for name in ENV_VARS if name != "LOCAL_RANK" and name not in os.environ]
        if missing:
            raise ValueError(f"--distributed needs the torchrun environment; {', '.join(missing)} not set (launch "
                             f"with: torchrun --nproc-per-node N -m fxtrain.host.cli train --distributed ...)")
        if not timeout_s > 0:
            raise ValueError(f"The distributed timeout must be positive, not {timeout_s!r}")
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        return cls(**options)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # --- per-rank backend and seeds -------------------------------------------------------------------------
    def seed(self, cfg):
        return rank_seed(cfg.seed, self.rank)

    def backend_spec(self, cfg):
        specs = cfg.backend.split(",")
        if len(specs) == 1:
            return specs[0]
        if self.local_rank >= len(specs):
            raise ValueError(f"--backend lists {len(specs)} backends ({cfg.backend!r}) but this is local rank "
                             f"{self.local_rank}: give one per process on a host")
        return specs[self.local_rank]

    # --- set-up and steps --------------------------------------------------------------------------------
    def setup(self, cfg, model, fixed):
        if cfg.batch_size % self.world_size:
            raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) must be a multiple of the "
                             f"{self.world_size} ranks")
        options = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE + ("backend", "out_dir")}
        every = [None] * self.world_size
        dist.all_gather_object(every, options)
        for rank, theirs in enumerate(every):
            if theirs != options:
                diff = {k: (v, theirs.get(k)) for k, v in options.items() if theirs.get(k) != v}
                raise ValueError(f"rank {rank} was started with other options than rank {self.rank}: {diff}")
        self.fixed = fixed
        self.update_generator = torch.Generator().manual_seed(update_seed(cfg.seed))
        self._round_update(model)
        return DistributedDataParallel(model)

    def _round_update(self, model):
        """Put fixed-point master weights on their grid with the shared generator (module docstring)."""
        fixed = self.fixed
        if fixed is None or fixed.master_weights != "fixed":
            return
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (FixedLinear, FixedConv2d)):
                    raw = quantize_raw(module.weight, fixed.weights, fixed.rounding, self.update_generator)
                    module.weight.copy_(raw * fixed.weights.resolution)

    def batches(self, cfg, n, epoch):
        sampler = DistributedSampler(range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=epoch_seed(cfg.seed, 0), drop_last=False)
        sampler.set_epoch(epoch)
        mine = torch.tensor(list(sampler), dtype=torch.int64)
        per_rank = cfg.batch_size // self.world_size
        return [mine[start:start + per_rank] for start in range(0, len(mine), per_rank)]

    def after_step(self, model, step):
        self._round_update(model)
        self.steps += 1
        if self.check_every and self.steps % self.check_every == 0:
            self.check(model, f"step {self.steps}")

    def check(self, model, when: str) -> None:
        """Raise RuntimeError unless every rank holds bit-identical parameters and buffers."""
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        every = [None] * self.world_size
        dist.all_gather_object(every, digest.hexdigest())
        if len(set(every)) != 1:
            raise RuntimeError(f"data-parallel replicas diverged at {when}: parameter SHA-256 per rank "
                               f"{[d[:12] for d in every]}")

    # --- metrics ----------------------------------------------------------------------------------------------
    def reduce(self, counters: dict) -> dict:
        keys = sorted(counters)
        values = torch.tensor([float(counters[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(keys, values.tolist()))

    def evaluate(self, model, dataset, batch_size: int = 250):
        model.eval()
        mine = torch.arange(self.rank, len(dataset), self.world_size)
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(mine), batch_size):
                idx = mine[start:start + batch_size]
                logits = model(dataset.images[idx])
                y = dataset.labels[idx]
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
        total = self.reduce({"loss": loss_sum, "correct": correct})
        return total["loss"] / len(dataset), total["correct"] / len(dataset)

    # --- checkpoints ------------------------------------------------------------------------------------------
    def load(self, path):
        box = [None]
        if self.is_main:
            try:
                box[0] = ("ok", super().load(path))
            except Exception as error:  # every rank must learn it, or the others wait in the broadcast
                box[0] = ("error", error)
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise value
        return value

    def end_epoch(self, model, state: dict) -> dict:
        self.check(model, f"the end of an epoch (step {self.steps})")
        every = [None] * self.world_size
        dist.all_gather_object(every, state)
        return {**every[0], "rank_states": every}

    def restore(self, checkpoint: dict):
        states = checkpoint.get("rank_states")
        if states is None:
            return checkpoint if self.rank == 0 else None
        return states[self.rank] if self.rank < len(states) else None

    def state_dict(self) -> dict:
        return {"update_rng": self.update_generator.get_state(), "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if "update_rng" in state:
            self.update_generator.set_state(state["update_rng"])
