"""The ``fxtrain`` command line: help without a sub-command, one-line errors with exit status 2, progress bars,
TensorBoard scalars, and the base install (no torch) running ``fxtrain build --list``."""

import io
import json
import socket
import subprocess
import sys
import threading

import pytest

from fxtrain.host.cli import SUBCOMMANDS, main
from fxtrain.host.progress import EpochProgress


def test_no_subcommand_prints_help_and_starts_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fxtrain") and all(name in out for name in SUBCOMMANDS)
    assert not (tmp_path / "runs").exists()


def _one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


def test_missing_serial_port_is_one_line_and_status_2(capsys, tmp_path):
    """The issue's example: a serial port that does not exist is a TransportError, reported in one line."""
    _one_line_error(capsys, ["train", "--backend", "serial:/dev/ttyUSB9@3000000", "--out", str(tmp_path),
                             "--epochs", "1"],
                    "fxtrain train: error: Cannot open serial link '/dev/ttyUSB9' at 3000000 baud")
    _one_line_error(capsys, ["train", "--backend", "fpga", "--out", str(tmp_path)],
                    "fxtrain train: error: Unknown backend 'fpga': use one of emu,")


def test_simulator_that_fails_to_start_is_one_line(capsys, tmp_path, monkeypatch):
    """A simulator that is not installed (PATH without it) is a TransportError naming it, in one line."""
    monkeypatch.setenv("PATH", str(tmp_path))
    _one_line_error(capsys, ["demo", "--device", "sim:icarus"], "fxtrain demo: error: Simulator 'icarus' is not "
                                                                  "available")


@pytest.mark.slow
def test_board_that_does_not_answer_is_one_line(capsys):
    """A 'board' that accepts the connection and never answers: IDENTIFY times out after its retries, reported as
    one line naming the command (DeviceTimeout), not a traceback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    port = server.getsockname()[1]
    try:
        _one_line_error(capsys, ["demo", "--device", f"serial:socket://127.0.0.1:{port}@3000000"],
                        "fxtrain demo: error: IDENTIFY failed on serial:socket://127.0.0.1")
    finally:
        for conn, _ in accepted:
            conn.close()
        server.close()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_not_with_no_progress():
    stream = _Terminal()
    with EpochProgress(True, 4, "epoch 1/2", stream=stream) as progress:
        for done in range(1, 5):
            progress.update(done, 0.5 / done)
    text = stream.getvalue()
    assert "epoch 1/2" in text and "4/4" in text and "loss=0.1250" in text
    for enabled, stream in ((False, _Terminal()), (True, io.StringIO())):
        with EpochProgress(enabled, 4, "epoch", stream=stream) as progress:
            progress.update(4, 0.1)
        assert stream.getvalue() == ""


def test_tensorboard_scalars_equal_the_metrics(tmp_path, capsys):
    """--tensorboard DIR writes every per-epoch metric as a scalar under DIR/<name>, equal to metrics.json."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, board = tmp_path / "run", tmp_path / "tb"
    assert main(["train", "--backend", "float", "--epochs", "2", "--train-limit", "128", "--test-limit", "64",
                 "--out", str(out), "--name", "tb-run", "--no-plot", "--tensorboard", str(board)]) == 0
    history = json.loads((out / "metrics.json").read_text())["epochs"]
    events = EventAccumulator(str(board / "tb-run"))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= {"train_loss", "test_accuracy", "wall_s", "macs"}
    for tag in ("train_loss", "test_accuracy", "test_loss"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([row[tag] for row in history], rel=1e-6)


_NO_EXTRAS = """
import sys
for name in ("torch", "matplotlib", "tqdm", "tensorboard", "cocotb", "cocotb_tools", "serial", "apytypes"):
    sys.modules[name] = None          # import of any of them now raises ModuleNotFoundError
"""


def test_rtl_and_build_list_work_without_torch():
    """The base install: with torch and every other extra's package blocked, ``import fxtrain.rtl`` (and the
    SoC, the golden model, the board targets) and ``fxtrain build --list`` work, and ``fxtrain train`` says which
    extra to install, in one line."""
    code = _NO_EXTRAS + """
import fxtrain.rtl, fxtrain.rtl.soc, fxtrain.sim.gemm, fxtrain.sim.protocol, fxtrain.boards.targets
from fxtrain.host.cli import main
assert main(["build", "--list"]) == 0
assert main(["train", "--epochs", "1"]) == 2
assert "torch" not in sys.modules or sys.modules["torch"] is None
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "icebreaker" in result.stdout
    assert result.stderr.strip() == ("fxtrain train: error: needs the Python package 'torch', which is not "
                                     "installed: pip install 'fxtrain[train]'")
