"""fxtrain sweep on Ray Tune (fxtrain.host.sweep, sweep_report, board_pool): a local Ray instance with 2 CPUs and
tiny trials on the embedded MNIST subset. Skipped without the [sweep] extra."""

import csv
import itertools
import json
import signal
import subprocess
import sys
import time

import pytest

from fxtrain.host.board_pool import BoardLease
from fxtrain.host.cli import main

ray = pytest.importorskip("ray")



def _rows(out):
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_interrupted_sweep_resumes_its_trials(tmp_path, request):
    """A sweep stopped by Ctrl-C after its first epoch checkpoints continues, with --resume, from those
    checkpoints: every trial ends with all its epochs and at least one restarted from a saved epoch. (The
    interrupted sweep runs in its own process and Ray instance, before this module's instance starts.)"""
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "fxtrain.host.cli", "sweep", "--backend", "emu:fast", "--train-limit", "256",
               "--test-limit", "64", "--batch-size", "32", "--epochs", "40", "--seed", "1,2", "--scheduler", "fifo",
               "--num-cpus", "2", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("tune/sweep/*/checkpoint_*")):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "no trial checkpoint within 120 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        assert "unfinished" in (out / "trials.csv").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    request.getfixturevalue("local_ray")
    assert main(["sweep", "--resume", "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 2 and {r["seed"] for r in rows} == {"1", "2"}
    assert all(r["status"] == "completed" and r["epochs"] == "40" for r in rows), rows
    assert max(int(r["restored_epoch"]) for r in rows) >= 1, rows


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for the in-process sweeps: 2 CPUs and 2 boards."""
    ray.init(num_cpus=2, resources={"fxtrain_board": 2}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def test_asha_stops_a_bad_trial_and_writes_the_table(local_ray, tmp_path):
    """Three learning rates; the third (1e-5, started last: at most 2 trials at once, so the rung already holds
    another trial's result) cannot learn and ASHA stops it after its first epoch, while the best (0.05, ahead at
    every rung) runs all 3 epochs (0.02 may be stopped at a rung where 0.05 is ahead). The CSV/Markdown table and
    plot exist."""
    out = tmp_path / "sweep"
    assert main(["sweep", "--backend", "float", "--train-limit", "1000", "--test-limit", "200", "--batch-size", "16",
                 "--epochs", "3", "--lr", "0.05,0.02,0.00001", "--max-concurrent", "2", "--grace-period", "1",
                 "--schedule", "constant", "--init", "torch", "--shift-augment", "0",  # the recipe the lrs are for
                 "--reduction-factor", "2", "--out", str(out)]) == 0
    rows = {float(r["lr"]): r for r in _rows(out)}
    assert rows[1e-5]["status"] == "stopped early" and rows[1e-5]["epochs"] == "1", rows
    assert rows[0.05]["status"] == "completed" and rows[0.05]["epochs"] == "3", rows
    assert float(rows[0.05]["best_test_accuracy"]) > float(rows[1e-5]["best_test_accuracy"]) + 0.2
    markdown = (out / "trials.md").read_text().splitlines()
    assert markdown[0].startswith("| trial | lr | status") and len(markdown) == 2 + 3
    assert (out / "accuracy_vs_time.png").stat().st_size > 0


def test_board_trials_never_share_a_board(local_ray, tmp_path):
    """Three board trials on two fake ports (the bit-exact emulator behind each) with CPU for four at once: the
    board resource and the port leases let at most one trial use a port at a time and at most two run."""
    out, locks = tmp_path / "sweep", tmp_path / "locks"
    assert main(["sweep", "--boards", "fake0,fake1", "--board-spec", "emu", "--seed", "0,1,2", "--train-limit",
                 "32", "--test-limit", "16", "--batch-size", "16", "--epochs", "1", "--cpus-per-trial", "0.5",
                 "--scheduler", "fifo", "--lock-dir", str(locks), "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    assert {r["board"] for r in rows} <= {"fake0", "fake1"}
    leases = [json.loads(line) for line in (locks / "leases.jsonl").read_text().splitlines()]
    assert len(leases) == 3
    for a, b in itertools.combinations(leases, 2):
        if a["port"] == b["port"]:
            assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)
    for lease in leases:  # at most two boards busy at any start
        assert sum(o["start"] <= lease["start"] < o["end"] for o in leases) <= 2


def test_board_lease_takes_a_free_port_and_refuses_when_all_are_taken(tmp_path):
    """Two leases get the two ports; a third fails naming them; a released port (or one whose holder process
    died without releasing) is free again."""
    first, second = BoardLease(["p0", "p1"], lock_dir=tmp_path), BoardLease(["p0", "p1"], lock_dir=tmp_path)
    assert {first.port, second.port} == {"p0", "p1"}
    with pytest.raises(RuntimeError, match="p0, p1"):
        BoardLease(["p0", "p1"], lock_dir=tmp_path)
    first.release()
    with BoardLease(["p0", "p1"], lock_dir=tmp_path) as third:
        assert third.port == first.port
    second.release()
    code = ("from fxtrain.host.board_pool import BoardLease; import os; "
            f"lease = BoardLease(['p0'], lock_dir={str(tmp_path)!r}); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with BoardLease(["p0"], lock_dir=tmp_path) as again:
        assert again.port == "p0"
    with pytest.raises(ValueError, match="distinct"):
        BoardLease(["p0", "p0"], lock_dir=tmp_path)


def test_bad_sweep_values_are_clear_errors(tmp_path, capsys):
    assert main(["sweep", "--lr", "loguniform:0.1", "--out", str(tmp_path)]) == 2
    assert "LO:HI" in capsys.readouterr().err
    assert main(["sweep", "--epochs", "two", "--out", str(tmp_path)]) == 2
    assert "'two'" in capsys.readouterr().err
    assert main(["sweep", "--rounding", "stochastic,upward", "--out", str(tmp_path)]) == 2
    assert "'upward'" in capsys.readouterr().err


def test_method_options_are_swept_into_the_trials_method_config():
    """The approximate-training options are sweepable by their MethodConfig names (grids, booleans), and a trial's
    TrainConfig carries them in its MethodConfig, the rest in its own fields."""
    from ray import tune

    from fxtrain.host.sweep import SWEEPABLE, parse_values, trial_config

    assert {"sampling", "sample_ratio", "gradapprox", "rescale_factor", "precision_schedule"} <= set(SWEEPABLE)
    assert "methods" not in SWEEPABLE
    assert parse_values("gradapprox", "zero,top1") == tune.grid_search(["zero", "top1"])
    assert parse_values("sample_ratio", "0.25") == 0.25
    assert parse_values("sample_ends", "true") is True
    with pytest.raises(ValueError, match="'yes' for sample_ends is not a boolean"):
        parse_values("sample_ends", "yes")
    cfg = trial_config({"lr": 0.02, "gradapprox": "top1", "sampling": "topk", "sample_ratio": 0.25},
                       progress=False)
    assert cfg.lr == 0.02 and cfg.progress is False
    assert (cfg.methods.gradapprox, cfg.methods.sampling, cfg.methods.sample_ratio) == ("top1", "topk", 0.25)
