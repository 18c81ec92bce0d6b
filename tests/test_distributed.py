"""Data-parallel training (fxtrain.host.distributed) on 2 CPU ranks with gloo, launched by torchrun.

Each torchrun launch costs several seconds of start-up, so one 2-rank and one 1-rank launch of
``tests/ddp_worker.py`` run all the compared trainings (module-scoped fixtures).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fxtrain.host.cli import main
from fxtrain.host.distributed import rank_seed, update_seed

WORKER = Path(__file__).with_name("ddp_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(nproc, *args, timeout=300):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", str(_free_port()), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path_factory, nproc):
    out = tmp_path_factory.mktemp(f"ddp{nproc}")
    result = _torchrun(nproc, WORKER, out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _launch(tmp_path_factory, 2)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    return _launch(tmp_path_factory, 1)


def _state(out, run, rank):
    return torch.load(out / run / f"rank{rank}.pt")


def _history(out, run):
    return json.loads((out / run / "history.json").read_text())


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_rank_seeds_differ_and_rank0_keeps_the_run_seed():
    """Rank 0 reproduces single-process lanes; other ranks and the shared update generator get other seeds."""
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(4)} | {update_seed(7)}) == 5


def test_two_ranks_fixed_point_replicas_bit_identical(two_ranks):
    """Emulator, fixed master weights, stochastic rounding: after 2 epochs (8 steps, each also checked by the
    run's own per-step SHA-256 comparison) both ranks hold the same bits, and those are on the weight grid."""
    r0, r1 = _state(two_ranks, "emu", 0), _state(two_ranks, "emu", 1)
    _assert_identical(r0, r1)
    weight = r0["conv1.weight"]
    assert torch.equal(weight * 2 ** 14, torch.round(weight * 2 ** 14))
    checkpoint = torch.load(two_ranks / "emu" / "checkpoint.pt", weights_only=False)
    assert len(checkpoint["rank_states"]) == 2
    assert not torch.equal(torch.as_tensor(checkpoint["rank_states"][0]["quantizer_rng"]),
                           torch.as_tensor(checkpoint["rank_states"][1]["quantizer_rng"]))
    _assert_identical(checkpoint["model"], r0)


def test_two_ranks_resume_continues_bit_for_bit(two_ranks):
    """1 epoch + --resume for the 2nd gives the same weights and metrics as 2 epochs straight (2 ranks)."""
    _assert_identical(_state(two_ranks, "resumed", 0), _state(two_ranks, "emu", 0))
    straight, resumed = _history(two_ranks, "emu"), _history(two_ranks, "resumed")
    for a, b in zip(straight, resumed, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}


def test_two_ranks_match_one_rank_on_the_same_data(two_ranks, one_rank):
    """Float backend: 2 ranks with half the global batch each follow the 1-rank run to float rounding (same
    images per step, averaged gradients). Emulator: same data, independent rounding noise per rank, so the
    accuracy matches within noise."""
    two, one = _history(two_ranks, "float"), _history(one_rank, "float")
    for a, b in zip(two, one, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_accuracy"] == b["test_accuracy"]
    for key, value in _state(one_rank, "float", 0).items():
        torch.testing.assert_close(_state(two_ranks, "float", 0)[key], value, rtol=1e-4, atol=1e-5)
    two, one = _history(two_ranks, "emu"), _history(one_rank, "emu")
    assert two[-1]["train_loss"] == pytest.approx(one[-1]["train_loss"], abs=0.05)
    assert abs(two[-1]["test_accuracy"] - one[-1]["test_accuracy"]) <= 0.1
    assert two[-1]["macs"] == one[-1]["macs"]  # the same work, split over the ranks


def test_diverging_replica_is_caught(two_ranks):
    """One ulp added to rank 1's weights after step 1's check stops the run at step 2 on both ranks."""
    for rank in (0, 1):
        message = (two_ranks / "diverge" / f"rank{rank}.txt").read_text()
        assert message.startswith("data-parallel replicas diverged at step 2"), message


def test_failing_rank_fails_the_run_with_its_message(tmp_path):
    """Rank 1's backend cannot open: the launch ends non-zero (rank 0 is stopped, not left waiting) and names the
    rank and the bad port."""
    start = time.monotonic()
    result = _torchrun(2, "-m", "fxtrain.host.cli", "train", "--distributed", "--backend",
                       "emu,serial:/dev/fxtrain-no-such-port", "--train-limit", "64", "--test-limit", "32",
                       "--epochs", "1", "--out", tmp_path / "run", "--no-progress", "--no-plot",
                       "--dist-timeout", "60", timeout=120)
    assert result.returncode != 0
    assert "rank 1/2 failed" in result.stderr and "fxtrain-no-such-port" in result.stderr
    assert time.monotonic() - start < 100


def test_missing_rank_times_out_instead_of_hanging(tmp_path):
    """Rank 0 of 2 started alone gives up after --dist-timeout with an error naming the rendezvous."""
    env = {**ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "fxtrain.host.cli", "train", "--distributed", "--backend",
                             "float", "--epochs", "1", "--out", str(tmp_path / "run"), "--dist-timeout", "3"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert "1/2 clients joined" in result.stderr or "timed out" in result.stderr.lower(), result.stderr[-2000:]
    assert time.monotonic() - start < 100


def test_distributed_without_torchrun_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "--distributed", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "RANK" in error and "torchrun" in error
