"""``fxtrain demo``: the arithmetic contract on one GEMM, and its bit-for-bit check against a device."""

import re
import shutil

import pytest

from fxtrain.host import device_spec as device_module
from fxtrain.host.cli import main


def _means(out):
    return {mode: float(value) for mode, value in re.findall(r"0\.3 ulp rounded 4096 times, (\w+)\s*: mean ([\d.]+)",
                                                               out)}


def test_demo_nearest_loses_a_sub_ulp_value_stochastic_keeps_it(capsys):
    """§3: 0.3 ulp rounded 4096 times averages 0 with nearest and 0.3 (within 4 sigma) with stochastic."""
    assert main(["demo", "--size", "8", "--seed", "3"]) == 0
    means = _means(capsys.readouterr().out)
    assert means["nearest"] == 0.0
    assert abs(means["stochastic"] - 0.3) < 4 * (0.3 * 0.7 / 4096) ** 0.5


@pytest.mark.parametrize("spec", ["emu", "sim:icarus"])
def test_demo_device_is_bit_identical_to_the_golden_model(capsys, spec):
    """The same GEMMs on the protocol emulator and on the SoC's RTL under Icarus equal the golden model."""
    if spec == "sim:icarus" and shutil.which("iverilog") is None:
        pytest.skip("iverilog is not on PATH")
    assert main(["demo", "--size", "5", "--device", spec]) == 0
    out = capsys.readouterr().out
    assert out.count("on the device: bit-identical") == 2, out


def test_demo_reports_a_device_that_differs(capsys, monkeypatch):
    """A device whose lanes are seeded differently gives other stochastic results: the demo says so, exits 1."""
    real_open = device_module.open_device

    def open_misseeded(spec, **kwargs):
        device = real_open(spec, **kwargs)
        seed = device.seed
        device.seed = lambda value: seed(value + 1)
        return device

    monkeypatch.setattr(device_module, "open_device", open_misseeded)
    assert main(["demo", "--size", "6", "--device", "emu"]) == 1
    out = capsys.readouterr().out
    assert "nearest    on the device: bit-identical" in out
    assert re.search(r"stochastic on the device: DIFFERENT \(\d+ words", out), out


def test_demo_rejects_bad_size_and_format(capsys):
    """Bad arguments exit with status 2 and a message naming the bad value."""
    assert main(["demo", "--size", "0"]) == 2
    assert "GEMM size must be a positive integer, not 0" in capsys.readouterr().err
    assert main(["demo", "--format", "17.8"]) == 2
    assert "not 17" in capsys.readouterr().err
