"""The training loop and ``fxtrain train`` (fxtrain.host.train, fxtrain.host.train_cli)."""

import json

import pytest
import torch

from fxtrain.host.cli import main
from fxtrain.host.layers import FixedConfig
from fxtrain.host.train import TrainConfig, build, evaluate, train

TINY = dict(train_limit=96, test_limit=48, batch_size=16, lr=0.1, progress=False, plot=False, seed=3)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as ``fxtrain train`` uses by default: LeNet's small ops only spin with more on a busy
    machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_one_epoch_on_the_exact_emulator_lowers_the_loss(tmp_path):
    """One epoch of LeNet on 96 images with every GEMM on the bit-exact emulator lowers the train-set loss,
    sends GEMMs to the backend and writes metrics and an atomic checkpoint."""
    cfg = TrainConfig(backend="emu", epochs=1, out_dir=str(tmp_path / "run"), **TINY)
    model, _, _, _, train_set, _ = build(cfg)
    loss_before, _ = evaluate(model, train_set)
    history = train(cfg, log=lambda message: None)
    model_after, _, _, _, _, _ = build(cfg)
    model_after.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"])
    loss_after, _ = evaluate(model_after, train_set)
    print("loss before", loss_before, "after", loss_after)
    assert loss_after < loss_before - 0.01
    assert history[0]["macs"] > 0 and history[0]["gemms"] > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"][0]["epoch"] == 1
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,train_loss")
    assert not list((tmp_path / "run").glob(".*tmp*"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["emu", "emu:fast"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, backend):
    """Two epochs in one go and one epoch + ``resume`` for the second give identical weights and metrics
    (model, optimizer, quantizer generator and backend random state are all checkpointed). The run is extended
    from 1 to 2 epochs, so the learning rate must not depend on the epoch count: constant schedule."""
    tiny = {**TINY, "schedule": "constant"}
    straight = TrainConfig(backend=backend, epochs=2, out_dir=str(tmp_path / "a"), **tiny)
    history_a = train(straight, log=lambda message: None)
    first = TrainConfig(backend=backend, epochs=1, out_dir=str(tmp_path / "b"), **tiny)
    train(first, log=lambda message: None)
    resumed = TrainConfig(backend=backend, epochs=2, out_dir=str(tmp_path / "b"), resume=True, **tiny)
    history_b = train(resumed, log=lambda message: None)
    state_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    state_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for key, value in state_a["model"].items():
        assert torch.equal(value, state_b["model"][key]), key
    assert state_a["backend"]["counters"] == state_b["backend"]["counters"]
    if backend == "emu":
        assert state_a["backend"]["lane_state"] == state_b["backend"]["lane_state"]
    strip = lambda h: [{k: v for k, v in row.items() if k != "wall_s"} for row in h]  # noqa: E731
    assert strip(history_a) == strip(history_b)


def test_run_killed_after_an_epoch_resumes_to_the_same_result_with_the_cosine_schedule(tmp_path, monkeypatch):
    """A default-recipe run (cosine schedule over 3 epochs, shift augmentation) interrupted during epoch 2 and
    resumed ends with the same weights and metrics as an uninterrupted one: the learning rate is a function of
    the global step and the augmentation is drawn from the epoch's generator."""
    import fxtrain.host.train as train_module
    cfg = dict(backend="emu", epochs=3, **TINY)
    straight = train(TrainConfig(out_dir=str(tmp_path / "a"), **cfg), log=lambda message: None)
    real_evaluate = train_module.evaluate
    calls = []

    def evaluate_then_die(model, dataset, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill during epoch 2")
        return real_evaluate(model, dataset, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out_dir=str(tmp_path / "b"), **cfg), log=lambda message: None)
    monkeypatch.setattr(train_module, "evaluate", real_evaluate)
    resumed = train(TrainConfig(out_dir=str(tmp_path / "b"), resume=True, **cfg), log=lambda message: None)
    state_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    state_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for key, value in state_a["model"].items():
        assert torch.equal(value, state_b["model"][key]), key
    strip = lambda h: [{k: v for k, v in row.items() if k != "wall_s"} for row in h]  # noqa: E731
    assert strip(straight) == strip(resumed)


def test_resume_refuses_a_different_run_or_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(TrainConfig(backend="float", epochs=1, out_dir=str(tmp_path), resume=True, **TINY))
    train(TrainConfig(backend="float", epochs=1, out_dir=str(tmp_path), **TINY), log=lambda m: None)
    with pytest.raises(ValueError, match="different run"):
        train(TrainConfig(backend="float", epochs=2, out_dir=str(tmp_path), resume=True,
                          **{**TINY, "lr": 0.2}), log=lambda m: None)


def test_cli_reports_bad_options_clearly(tmp_path, capsys):
    assert main(["train", "--weights", "16,8", "--out", str(tmp_path / "x")]) == 2
    assert "not of the form" in capsys.readouterr().err
    assert main(["train", "--backend", "board9000", "--out", str(tmp_path / "x")]) == 2
    assert "board9000" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "x")]) == 2
    assert "nodata does not exist" in capsys.readouterr().err
    assert main(["train", "--weights", "20.8", "--out", str(tmp_path / "x")]) == 2
    assert "at most 16" in capsys.readouterr().err


def test_cli_input_grad_option_reaches_the_layers_and_the_run_name(tmp_path, capsys):
    """--input-grad convolution trains on the emulator with every FixedConfig holding it (named in the run's
    description, its default name and metrics.json); an unknown value is refused naming the choices."""
    out = tmp_path / "dx"
    assert main(["train", "--backend", "emu", "--epochs", "1", "--train-limit", "32", "--test-limit", "16",
                 "--batch-size", "16", "--input-grad", "convolution", "--out", str(out), "--no-progress",
                 "--no-plot"]) == 0
    assert "convolution input gradients" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["config"]["input_grad"] == "convolution"
    assert TrainConfig(input_grad="convolution").run_name.endswith("-dxconvolution")
    with pytest.raises(SystemExit):
        main(["train", "--input-grad", "fold"])
    assert "invalid choice: 'fold'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="input_grad must be one of"):
        FixedConfig(input_grad="fold")


def test_cli_float_run_writes_outputs(tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["train", "--backend", "float", "--epochs", "1", "--train-limit", "64", "--test-limit", "32",
                 "--out", str(out), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "metrics.json", "metrics.csv", "curves.png"}
