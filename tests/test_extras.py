"""Packaging: Ray Tune is an optional extra ([sweep]); the base install and the CLI without a sweep never need it."""

import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _name(requirement):
    return requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()


def test_ray_only_in_optional_extras():
    """The base dependencies do not name Ray; the [sweep] extra does."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert "ray" not in {_name(r) for r in project["dependencies"]}
    assert "ray" in {_name(r) for r in project["optional-dependencies"]["sweep"]}


def test_cli_and_training_do_not_import_ray():
    """Building the CLI (all sub-commands' options, sweep included) and importing the training and distributed
    modules leave Ray unimported, so ``fxtrain train`` works on a base install."""
    code = ("import sys; from fxtrain.host.cli import build_parser; build_parser(); "
            "import fxtrain.host.train, fxtrain.host.distributed, fxtrain.host.sweep, fxtrain.host.sweep_report; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
