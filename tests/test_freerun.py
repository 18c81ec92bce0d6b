"""The free-running Verilator harness behind ``sim:verilator`` (``sim/freerun.py``, ``sim/freerun_harness.cpp``).

Training GEMMs through it equal the exact emulator bit for bit; a partial frame is abandoned and answered before
``resync`` returns; the harness process ends with its host; a missing compiler or a failed build is one clear
``TransportError``/``HarnessError`` line. The SoC build is the one ``tests/test_device.py`` uses (same
configuration and build root), so CI compiles it once.
"""

import subprocess
import sys
import time

import pytest

from fxtrain.host.device import Device
from fxtrain.host.transport import HarnessTransport, SimulationTransport, TransportError
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.protocol import Command, ResponseParser, Status, encode_request
from fxtrain.sim.runner import simulator_available

SIM_CONFIG = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12)

pytestmark = pytest.mark.skipif(not simulator_available("verilator")[0], reason="Verilator unavailable")


@pytest.fixture(scope="module")
def harness(build_root):
    transport = SimulationTransport("verilator", SIM_CONFIG, build_root=build_root)
    assert isinstance(transport, HarnessTransport)
    yield transport
    transport.close()


def _exchange(transport, cmd, seq, payload=b""):
    transport.write(encode_request(cmd, seq, payload))
    parser, deadline = ResponseParser(), time.monotonic() + 10
    while time.monotonic() < deadline:
        responses = parser.feed(transport.read(0.5))
        if responses:
            return responses
    raise AssertionError("no response within 10 s")


def test_training_gemms_through_the_harness_equal_the_exact_emulator(harness):
    """LeNet forward and backward on two images with every GEMM (conv1/conv2/fc forward, input and weight
    gradients, stochastic rounding) through the free-running harness gives outputs and gradients bit-identical
    to ExactEmulator with the same engine configuration and lane seed."""
    torch = pytest.importorskip("torch")
    convert = pytest.importorskip("fxtrain.host.convert")
    from fxtrain.host.emulator import ExactEmulator
    from fxtrain.host.models import build_model

    seed = 7
    print("seed", seed)
    torch.manual_seed(seed)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 8])
    device = Device(harness, timeout=60.0)
    results = []
    for backend in (ExactEmulator(SIM_CONFIG, seed=seed), device):
        backend.seed(seed)
        model = convert.convert(build_model("lenet", 0), backend, rounding="stochastic", seed=seed)
        out = model(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_e, grads_e), (out_d, grads_d) = results
    # 5 forward GEMMs, 5 weight gradients, 4 input gradients (none for the image)
    assert device.counters["gemms"] == 14 and out_e.abs().sum() > 0
    assert torch.equal(out_e, out_d)
    assert all(torch.equal(a, b) for a, b in zip(grads_e, grads_d))
    harness.sync()
    print(f"{harness.cycles} cycles simulated in {harness.run_seconds:.2f} s "
          f"({harness.cycles / harness.run_seconds:.0f} cycles/s while running)")


def test_resync_returns_after_the_partial_frame_is_answered(harness):
    """A truncated request: resync returns only once the SoC has timed it out and its TIMEOUT response has been
    dropped; the next request is answered normally and nothing stale is left in the pipe."""
    (identify,) = _exchange(harness, Command.IDENTIFY, 1)
    assert identify.status == Status.OK
    cycles = harness.cycles
    harness.write(bytes([0xA5, Command.IDENTIFY, 9]))           # start, CMD, SEQ, then nothing
    harness.resync()
    assert harness.cycles - cycles >= 2000                       # the frame timeout elapsed in simulation
    assert harness.read(0.2) == b""
    (again,) = _exchange(harness, Command.IDENTIFY, 2)
    assert again.status == Status.OK and again.seq == 2 and again.payload == identify.payload


def test_harness_ends_with_its_host(build_root):
    """A host process that dies without closing the transport takes the harness with it (its pipes close)."""
    code = ("import os, sys\n"
            "from fxtrain.host.transport import SimulationTransport\n"
            "from fxtrain.sim.gemm import EngineConfig\n"
            f"t = SimulationTransport('verilator', EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12), "
            f"build_root={str(build_root)!r})\n"
            "print(t.process.pid, flush=True)\n"
            "os._exit(3)\n")
    host = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert host.returncode == 3, host.stderr
    pid = int(host.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return                                               # gone and reaped
        if state in "ZX":
            return                                               # exited; reaping is init's job
        time.sleep(0.1)
    raise AssertionError(f"harness {pid} still running 10 s after its host died")


def test_missing_compiler_is_one_clear_line(tmp_path, monkeypatch):
    """No C++ compiler: TransportError naming it, before anything is built."""
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(TransportError, match="sim:verilator cannot start: No C\\+\\+ compiler: "
                                             "'no-such-compiler-xyz' is not on PATH"):
        SimulationTransport("verilator", SIM_CONFIG, build_root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_failed_build_is_one_clear_line(tmp_path, monkeypatch):
    """A compiler that fails: HarnessError with one line naming the exit code and the build log."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    from fxtrain.sim.freerun import HarnessError, build_harness

    class Echo(wiring.Component):
        rx: In(stream.Signature(8))
        tx: Out(stream.Signature(8))

        def elaborate(self, platform):
            m = Module()
            count = Signal(8)                                    # a clocked design: clk and rst ports
            m.d.sync += count.eq(count + self.rx.valid)
            wiring.connect(m, wiring.flipped(self.rx), wiring.flipped(self.tx))
            m.d.comb += self.tx.payload.eq(self.rx.payload ^ count)
            return m

    monkeypatch.setenv("CXX", "false")
    with pytest.raises(HarnessError, match=r"^Building the Verilator harness failed \(exit \d+\): .* — full log "
                                           r".*build\.log$") as error:
        build_harness(Echo(), "echo", build_root=tmp_path)
    assert "\n" not in str(error.value)
