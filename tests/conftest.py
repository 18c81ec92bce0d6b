"""Shared fixtures: the cocotb simulators and the build directory of the benches.

``simulator``
    Parametrizes a test over :data:`fxtrain.sim.runner.SIMULATORS` (session scope, so session/module fixtures
    can build each design once per simulator); a missing simulator is skipped with the reason.
``build_root``
    Where :func:`fxtrain.sim.runner.run_bench` caches builds: ``$FXTRAIN_SIM_BUILD`` if set, else the
    repository's ``.sim_build`` (git-ignored), so a design is built once per simulator across test sessions.
``run_cocotb``
    :func:`run_bench` with the fixtures' build root, usable from session/module-scoped fixtures.

Markers (registered in ``pyproject.toml``): every test that uses the ``simulator`` or ``run_cocotb`` fixture, or is
parametrized with a ``sim:...`` backend spec, is marked ``cocotb``; every test that uses the ``builds`` fixture
(``tests/test_boards.py``) is marked ``toolchain``. Other tests carry their marks explicitly.
"""

import os
from pathlib import Path

import pytest

from fxtrain.host.transport import EmulatorTransport
from fxtrain.sim.runner import SIMULATORS, run_bench, simulator_available


def _runs_simulated_rtl(item):
    if {"simulator", "run_cocotb"} & set(item.fixturenames):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(isinstance(value, str) and value.startswith(("sim:", "device:sim:")) for value in params.values())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _runs_simulated_rtl(item):
            item.add_marker(pytest.mark.cocotb)
        if "builds" in item.fixturenames:
            item.add_marker(pytest.mark.toolchain)


@pytest.fixture(scope="session", params=SIMULATORS)
def simulator(request):
    ok, why = simulator_available(request.param)
    if not ok:
        pytest.skip(f"{request.param} unavailable: {why}")
    return request.param


@pytest.fixture(scope="session")
def build_root():
    root = Path(os.environ.get("FXTRAIN_SIM_BUILD", Path(__file__).resolve().parents[1] / ".sim_build"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def run_cocotb(build_root):
    """``run_cocotb(component, toplevel, module, simulator, params)`` -> number of cocotb tests that passed."""
    def run(component, toplevel, test_module, simulator, params):
        # run_bench passes a relative results_xml, which cocotb_tools refuses while PYTEST_CURRENT_TEST is set
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("PYTEST_CURRENT_TEST", raising=False)
            return run_bench(component, toplevel, test_module, simulator=simulator, params=params,
                             build_root=build_root)
    return run


@pytest.fixture
def torch_one_thread():
    """torch on one intra-op thread for the test (deterministic reductions, no oversubscription), restored after."""
    import torch  # not at module level: the suite's base-install checks run without torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def platform_instances():
    """``instances(elaboratable, platform)``: every ``Instance`` (vendor primitive) the design elaborates to for
    ``platform``, depth first."""
    from amaranth.hdl import Fragment, Instance

    def walk(fragment):
        found = [fragment] if isinstance(fragment, Instance) else []
        for sub, _, _ in getattr(fragment, "subfragments", []):
            found.extend(walk(sub))
        return found

    return lambda elaboratable, platform: walk(Fragment.get(elaboratable, platform))


def lenet_sgd_states(backends, steps, **options):
    """The state dicts of LeNet after ``steps`` SGD steps (batch 4, lr 0.05, random images and labels from a fixed
    generator) with every GEMM on each of ``backends`` in turn, from the same initial weights; for tests that
    compare backends bit for bit. ``options``: FixedConfig fields for ``convert``."""
    import torch

    from fxtrain.host.convert import convert
    from fxtrain.host.models import LeNet

    states = []
    for backend in backends:
        torch.manual_seed(0)
        model = convert(LeNet(), backend, seed=2, **options)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        data = torch.Generator().manual_seed(1)
        for _ in range(steps):
            x = torch.rand(4, 1, 28, 28, generator=data)
            y = torch.randint(0, 10, (4,), generator=data)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        states.append(model.state_dict())
    return states


def assert_equal_states(got, want):
    """Every tensor of two state dicts equal bit for bit (named on failure)."""
    import torch

    for (name, a), b in zip(got.items(), want.values()):
        assert torch.equal(a, b), name



class CorruptNthRequest(EmulatorTransport):
    """Flips one bit of the ``nth`` request frame of command ``cmd``, first try only: ``where="crc"`` a bit of the
    frame's last (CRC) byte, so the device answers CRC_ERROR; ``"payload"`` a bit of its middle byte (frames longer
    than 6 bytes)."""

    def __init__(self, emulator, cmd, nth, where="crc"):
        super().__init__(emulator)
        if where not in ("crc", "payload"):
            raise ValueError(f"where must be 'crc' or 'payload', not {where!r}")
        self.cmd, self.left, self.hit, self.where = int(cmd), nth, False, where

    def write(self, data):
        data = bytearray(data)
        min_len = 2 if self.where == "crc" else 6
        if len(data) > min_len and data[0] == 0xA5 and data[1] == self.cmd and not self.hit:
            self.left -= 1
            if self.left < 0:
                if self.where == "crc":
                    data[-1] ^= 0x10
                else:
                    data[len(data) // 2] ^= 0x08
                self.hit = True
        super().write(bytes(data))
