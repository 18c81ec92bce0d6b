"""One rank of the data-parallel tests in ``tests/test_distributed.py`` (launched by torchrun; not a test module).

``python -m torch.distributed.run --nproc-per-node W tests/ddp_worker.py OUT`` runs, in one process group, the
runs the tests compare and writes ``OUT/<run>/rank<R>.pt`` (that rank's final state dict) and, on rank 0,
``OUT/<run>/history.json``:

* ``float``   — float backend, float master weights, 2 epochs;
* ``emu``     — bit-exact emulator, fixed master weights, stochastic rounding, 2 epochs, replicas compared after
  every step;
* ``resumed`` — the same as ``emu`` in 1 epoch, then resumed for the 2nd.

* ``diverge`` (2 ranks or more) — ``emu`` with rank 1's weights moved by one ulp of the weight format after the
  first step's check; every rank writes the error the replica check raises to ``OUT/diverge/rank<R>.txt``.
"""

import json
import sys
from pathlib import Path

import torch

from fxtrain.host.distributed import Replicas
from fxtrain.host.train import TrainConfig, train

TINY = dict(train_limit=128, test_limit=64, batch_size=32, lr=0.1, seed=5, progress=False, plot=False)


class Recording(Replicas):
    """Keeps a copy of this rank's state dict at the end of each epoch; ``diverge`` perturbs rank 1."""

    def __init__(self, diverge=False, **options):
        super().__init__(**options)
        self.diverge = diverge
        self.final = None

    def after_step(self, model, step):
        super().after_step(model, step)
        if self.diverge and self.rank == 1 and self.steps == 1:
            with torch.no_grad():
                model.conv1.weight.view(-1)[0] += 2.0 ** -14

    def end_epoch(self, model, state):
        self.final = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return super().end_epoch(model, state)


def main():
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    runs = [
        ("float", dict(backend="float", master_weights="float", epochs=2), []),
        ("emu", dict(backend="emu", epochs=2), []),
        ("resumed", dict(backend="emu", epochs=1), [dict(epochs=2, resume=True)]),
    ]
    for name, options, continuations in runs:
        for extra in [{}] + continuations:
            cfg = TrainConfig(out_dir=str(out / name), **{**TINY, **options, **extra})
            replica = Recording(check_every=1)
            history = train(cfg, log=lambda message: None, replica=replica)
        torch.save(replica.final, out / name / f"rank{replica.rank}.pt")
        if replica.rank == 0:
            (out / name / "history.json").write_text(json.dumps(history))
    if replica.world_size > 1:
        replica = Recording(diverge=True, check_every=1)
        cfg = TrainConfig(out_dir=str(out / "diverge"), backend="emu", epochs=1, **TINY)
        try:
            train(cfg, log=lambda message: None, replica=replica)
            outcome = "not caught"
        except RuntimeError as error:
            outcome = str(error)
        (out / "diverge").mkdir(exist_ok=True)
        (out / "diverge" / f"rank{replica.rank}.txt").write_text(outcome)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
