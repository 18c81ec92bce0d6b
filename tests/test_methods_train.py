"""The methods inside training runs: resume mid-schedule / mid-rescaling, ResNet-20, CIFAR-10 batches,
``fxtrain compare`` end to end, and the CLI listing every method."""

import csv
import pickle

import numpy as np
import pytest
import torch

from fxtrain.host.cifar import load_cifar10_dir
from fxtrain.host.cli import main
from fxtrain.host.datasets import load_data
from fxtrain.host.methods import MethodConfig
from fxtrain.host.models import build_model
from fxtrain.host.train import TrainConfig, train

TINY = dict(train_limit=64, test_limit=32, batch_size=16, lr=0.05, progress=False, plot=False, seed=3)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _strip(history):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in history]


@pytest.mark.parametrize("methods", [
    dict(rescale_factor=2, rescale_epochs=2, precision_schedule="0:8.6/8.4/8.8,1:16.14/16.10/16.14",
         gradapprox="random", gradapprox_schedule="alternate"),
    dict(sampling="crs", sample_mode="backward", gradapprox="top1",
         precision_schedule="0:12.8/12.6/12.10,2:16.14/16.10/16.14"),
])
def test_resume_mid_schedule_and_mid_rescaling_continues_identically(tmp_path, methods):
    """3 epochs straight and 1 epoch + resume to 3 give identical weights, metrics and backend counters, with the
    checkpoint taken inside the rescaling phase and before a format switch (sampler / random-gradient generator,
    step and phase restored)."""
    # A constant learning rate: extending a run by --resume changes a cosine schedule's length by design.
    cfg = dict(backend="emu:fast", methods=MethodConfig(**methods), schedule="constant", **TINY)
    history_a = train(TrainConfig(epochs=3, out_dir=str(tmp_path / "a"), **cfg), log=lambda m: None)
    train(TrainConfig(epochs=1, out_dir=str(tmp_path / "b"), **cfg), log=lambda m: None)
    messages = []
    history_b = train(TrainConfig(epochs=3, out_dir=str(tmp_path / "b"), resume=True, **cfg), log=messages.append)
    assert any("resuming" in m for m in messages)
    state_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    state_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert state_a["model"].keys() == state_b["model"].keys()
    for key, value in state_a["model"].items():
        assert torch.equal(value, state_b["model"][key]), key
    assert state_a["backend"]["counters"] == state_b["backend"]["counters"]
    assert _strip(history_a) == _strip(history_b)


def test_rescaling_phase_sends_fewer_macs_and_the_model_returns_to_full_size(tmp_path):
    history = train(TrainConfig(backend="emu:fast", epochs=2, out_dir=str(tmp_path),
                                methods=MethodConfig(rescale_factor=2, rescale_epochs=1), **TINY),
                    log=lambda m: None)
    assert history[0]["macs"] < 0.3 * history[1]["macs"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    assert tuple(state["conv1.weight"].shape) == (6, 1, 5, 5) and tuple(state["fc1.weight"].shape) == (120, 256)


def test_resnet20_has_19_offloaded_convolutions_and_trains_a_step_with_a_method(tmp_path):
    model = build_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and all(m.kernel_size == (3, 3) for m in convs)
    assert sum(p.numel() for p in model.parameters()) == 269_434   # He et al.: 0.27 M
    history = train(TrainConfig(model="resnet20", backend="emu:fast", epochs=1, out_dir=str(tmp_path),
                                methods=MethodConfig(gradapprox="zero"),
                                **{**TINY, "train_limit": 16, "test_limit": 8}), log=lambda m: None)
    assert history[0]["macs"] > 0


def _write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data}, f, protocol=2)
    return data, labels


def test_cifar10_loader_reads_python_batches(tmp_path):
    """Batch files written like CIFAR-10's: pixel (c, y, x) is data[n, 1024 c + 32 y + x] / 255, labels kept."""
    d1, l1 = _write_batch(tmp_path / "data_batch_1", 5, 1)
    d2, l2 = _write_batch(tmp_path / "data_batch_2", 3, 2)
    dt, lt = _write_batch(tmp_path / "test_batch", 4, 3)
    train_set, test_set = load_data(str(tmp_path))
    assert train_set.images.shape == (8, 3, 32, 32) and test_set.images.shape == (4, 3, 32, 32)
    assert train_set.labels.tolist() == l1 + l2 and test_set.labels.tolist() == lt
    assert float(train_set.images[6, 2, 5, 7]) == pytest.approx(d2[1, 2048 + 5 * 32 + 7] / 255)
    assert build_model("resnet20", in_channels=3)(train_set.images[:2]).shape == (2, 10)


def test_cifar10_loader_refuses_missing_and_malicious_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_batch"):
        _write_batch(tmp_path / "data_batch_1", 2, 1)
        load_cifar10_dir(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="builtins.print"):
        load_cifar10_dir(tmp_path)


def test_train_help_lists_every_method(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--sampling", "topk", "crs", "bernoulli", "--sample-mode", "--gradapprox", "zero", "random",
                   "top1", "--gradapprox-schedule", "--rescale", "--rescale-epochs", "--precision-schedule"):
        assert option in text, option
    assert main(["train", "--sampling", "crs", "--backend", "float", "--no-progress", "--no-plot"]) == 2
    assert "need a fixed-point backend" in capsys.readouterr().err


def test_compare_summary_averages_over_seeds_and_leaves_float32_without_board_time():
    from fxtrain.host.compare import _summary
    rows = [dict(variant=v, seed=s, final_accuracy=a, best_accuracy=a, host_s_per_epoch=1.0, macs_per_epoch=2.0,
                 predicted_s_b=(float("nan") if v == "float32" else 3.0 + s))
            for v, s, a in (("float32", 0, 0.9), ("float32", 1, 0.8), ("fixed", 0, 0.5), ("fixed", 1, 0.7))]
    table = {e["variant"]: e for e in _summary(rows, ["b"])}
    assert table["fixed"]["final_accuracy"] == pytest.approx((0.6, 0.1414213), rel=1e-5)
    assert table["fixed"]["predicted_s_b"] == pytest.approx((3.5, 0.7071068), rel=1e-5)
    assert all(v != v for v in table["float32"]["predicted_s_b"])


def test_compare_writes_table_and_plot_end_to_end(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text('variants = ["float32", "fixed", "topk-fwd", "grad-zero"]\nepochs = 1\n'
                      'train_limit = 24\ntest_limit = 16\nbatch_size = 8\nboards = ["icebreaker"]\n')
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "cmp")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert [r["variant"] for r in rows] == ["float32", "fixed", "topk-fwd", "grad-zero"]
    macs = {r["variant"]: float(r["macs_per_epoch"]) for r in rows}
    assert macs["topk-fwd"] < macs["fixed"] and macs["grad-zero"] < macs["fixed"]
    assert macs["float32"] == macs["fixed"]   # the same GEMMs, computed on the host
    pred = {r["variant"]: float(r["predicted_s_icebreaker"]) for r in rows}
    assert pred["topk-fwd"] < pred["fixed"]
    summary = (tmp_path / "cmp" / "summary.md").read_text()
    assert "| topk-fwd |" in summary and (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    config.write_text('variants = ["nope"]\n')
    assert main(["compare", "--config", str(config)]) == 2
    assert "Unknown variants" in capsys.readouterr().err
