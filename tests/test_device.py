"""Host driver over every transport: bit-exact GEMMs of odd shapes, residency, fault recovery, timeouts.

``emu`` is the in-process protocol emulator, ``sim:verilator`` the SoC's Verilog in the free-running Verilator
harness, ``sim:icarus`` the same Verilog served by the cocotb SoC server (each built once, cached). Results
must equal ``sim.gemm.tiled_gemm`` with the same lane seeds, bit for bit (``docs/numerics.md`` §6).
"""

import dataclasses
import random
import time
import types

import numpy as np
import pytest

from fxtrain.host.backend import Backend, open_backend
from fxtrain.host.device import Device, DeviceError, DeviceMismatch, DeviceTimeout, ResidentMemory
from fxtrain.host.device_spec import open_device
from fxtrain.host.transport import EmulatorTransport, Transport, TransportError
from fxtrain.sim.gemm import EngineConfig, tiled_gemm
from fxtrain.sim.lfsr import lane_seeds
from fxtrain.sim.payloads import RUN_ARGS, WRITE_HEADER, Identity
from fxtrain.sim.protocol import Command, ProtocolEmulator, ResponseParser, Status, encode_request
from fxtrain.sim.rounding import RoundingMode
from fxtrain.sim.runner import simulator_available

# B memory deeper than A's (and than 512), as on the iCEBreaker (the simulation transports' default)
SIM_CONFIG = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12, b_depth=1024)
TRANSPORTS = ["emu", "sim:verilator", "sim:icarus"]


class Mirror:
    """The golden model's lane states, advanced GEMM by GEMM like the device's."""

    def __init__(self, config, seed):
        self.config = config
        self.state = lane_seeds(seed, config.lanes)

    def gemm(self, a, b, shift, mode):
        result = tiled_gemm(self.config, a, b, shift, mode, self.state)
        self.state = result.lane_state
        return result


@pytest.fixture(scope="module", params=TRANSPORTS)
def device(request, build_root):
    spec = request.param
    if spec.startswith("sim:"):
        ok, why = simulator_available(spec[4:])
        if not ok:
            pytest.skip(f"{spec[4:]} unavailable: {why}")
        dev = open_device(spec, config=SIM_CONFIG, build_root=build_root)
    else:
        dev = open_device(spec, config=SIM_CONFIG)
    yield dev
    dev.close()


def _random(rng, shape, wl):
    return rng.integers(-(1 << (wl - 1)), 1 << (wl - 1), shape)


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_odd_shape_gemms_are_bit_exact(device, mode):
    """M, N not multiples of the array and K > depth (K-split with clear/drain), plus K=1 and saturating
    extremes, equal tiled_gemm bit for bit with the same seeds."""
    seed = 20 + len(mode)
    rng = np.random.default_rng(seed)
    print("seed", seed, "transport", device.transport.name)
    device.seed(seed)
    mirror = Mirror(device.config, seed)
    wl = device.config.wl
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    cases = [(_random(rng, (5, 70), wl), _random(rng, (70, 3), wl), 14),
             (_random(rng, (1, 1), wl), _random(rng, (1, 1), wl), 0),
             (np.full((3, 4), lo), np.array([[lo, hi, lo]] * 4), 3)]
    for a, b, shift in cases:
        got = device.gemm(a, b, shift, mode)
        want = mirror.gemm(a, b, shift, mode)
        assert (got.c == want.c).all(), (a.shape, b.shape, shift)
        assert (got.saturated == want.saturated).all()
    assert want.saturated.any() and (want.c == hi).any() and (want.c == lo).any()


def test_resident_b_is_sent_once_per_key(device):
    """A B operand with a b_key crosses the link once; a second GEMM reuses it and is still exact."""
    seed = 31
    rng = np.random.default_rng(seed)
    print("seed", seed)
    device.seed(seed)
    mirror = Mirror(device.config, seed)
    b = _random(rng, (12, 3), device.config.wl)          # 2 B tiles x 12 entries fit in depth 32
    key = ("weights", seed)
    for i in range(2):
        sent = device.counters["b_entries_sent"]
        a = _random(rng, (3, 12), device.config.wl)
        got = device.gemm(a, b, 15, "stochastic", b_key=key)
        assert (got.c == mirror.gemm(a, b, 15, "stochastic").c).all()
        if i == 1:
            assert device.counters["b_entries_sent"] == sent
    b2 = b.copy()
    b2[0, 0] ^= 1                         # same key, new contents: must be re-sent, never a stale result
    a = _random(rng, (3, 12), device.config.wl)
    got = device.gemm(a, b2, 15, "stochastic", b_key=key)
    assert (got.c == mirror.gemm(a, b2, 15, "stochastic").c).all()


def test_weights_above_a_depth_stay_resident_in_the_deeper_b_memory(device):
    """B memory of 1024 entries next to A's 32: 24 keyed weight matrices (K from 16 to 33 > A's depth, so
    K-splits, and K = 1; N = 3 and 1) take 810 B entries, addresses above 512 and far above A's range; every
    GEMM is bit-exact, and a second pass over all keys sends no B entry at all."""
    seed = 1212
    rng = np.random.default_rng(seed)
    print("seed", seed)
    assert device.config.b_depth == 1024 and device.config.depth == 32
    device.reset()                        # start from an empty B memory (earlier tests' keys are forgotten)
    device.seed(seed)
    mirror = Mirror(device.config, seed)
    shapes = [((16 + (7 * i) % 18) if i % 6 else 1, 3 if i % 2 else 1) for i in range(24)]    # K 1, 16..33
    weights = [_random(rng, (k, n), device.config.wl) for k, n in shapes]
    assert 512 < sum(k * -(-n // 2) for k, n in shapes) <= 1024
    for rnd in range(2):
        sent = device.counters["b_entries_sent"]
        for i, b in enumerate(weights):
            a = _random(rng, (int(rng.integers(1, 6)), b.shape[0]), device.config.wl)
            mode = "stochastic" if (i + rnd) % 2 else "nearest"
            got = device.gemm(a, b, 9, mode, b_key=("w", i))
            want = mirror.gemm(a, b, 9, mode)
            assert (got.c == want.c).all() and (got.saturated == want.saturated).all(), (rnd, i)
        if rnd == 1:
            assert device.counters["b_entries_sent"] == sent
    b_mem = device.planner.b_mem if device.pipelined else device._b_mem
    assert b_mem.depth == 1024 and max(start + n for start, n, _ in b_mem._ranges.values()) > 512


def _responses(transport, wait, settle=0.05):
    """Responses until ``wait`` seconds pass with none, or ``settle`` seconds of silence after the first."""
    parser = ResponseParser()
    out = []
    while True:
        data = transport.read(settle if out else wait)
        if not data:
            return out
        out += parser.feed(data)


def test_fault_injection_then_gemm_succeeds(device):
    """Random garbage, truncated frames, flipped CRC bits, unknown commands and wrong lengths are answered
    with error statuses (or ignored, for garbage) and never hang the device; a GEMM afterwards is exact."""
    seed = 41
    rng = random.Random(seed)
    print("seed", seed)
    transport = device.transport
    quiet = max(transport.quiet_time, 0.05)
    before = device.device_counters()
    bad = []
    for i in range(3):
        frame = bytearray(encode_request(Command.SET_ROUNDING, 200 + i, bytes([3, 1])))
        frame[rng.randrange(1, len(frame))] ^= 1 << rng.randrange(8)
        bad.append((bytes(frame), {Status.CRC_ERROR, Status.UNKNOWN_COMMAND, Status.BAD_LENGTH}))
    for i in range(3):
        bad.append((encode_request(rng.choice([0x00, 0x0A, 0x7F, 0xFF]), 210 + i, b"zz"), {Status.UNKNOWN_COMMAND}))
    bad.append((encode_request(Command.RUN, 220, b"\x00" * 5), {Status.BAD_LENGTH}))
    bad.append((encode_request(Command.READ_RESULT, 221, b"\x00"), {Status.BAD_LENGTH}))
    bad.append((encode_request(Command.SET_SEEDS, 222, b"\x01" * 4), {Status.BAD_LENGTH}))
    for frame, allowed in bad:
        transport.write(frame)
        responses = _responses(transport, 10 * quiet)
        assert len(responses) == 1 and responses[0].crc_ok and Status(responses[0].status) in allowed, \
            (frame.hex(), responses)
    tried = len(bad)
    garbage = bytes(rng.randrange(256) for _ in range(300))
    transport.write(garbage)
    transport.resync()
    tried += 1
    for cut in (3, 12):
        frame = encode_request(Command.WRITE_A, 230 + cut, WRITE_HEADER.pack(0, 4) + b"\x07" * 16)[:cut]
        transport.write(frame)
        responses = _responses(transport, 10 * quiet)
        assert [Status(r.status) for r in responses] == [Status.TIMEOUT], (cut, responses)
        tried += 1
    print(f"bad frames tried: {tried} (9 checked frames, 300 garbage bytes, 2 truncated)")
    after = device.device_counters()
    assert after["timeouts"] - before["timeouts"] >= 2
    assert after["unknown_commands"] - before["unknown_commands"] >= 3
    assert after["bad_lengths"] - before["bad_lengths"] >= 3
    device.seed(seed)
    mirror = Mirror(device.config, seed)
    np_rng = np.random.default_rng(seed)
    a, b = _random(np_rng, (3, 40), device.config.wl), _random(np_rng, (40, 3), device.config.wl)
    got = device.gemm(a, b, 12, "stochastic")
    assert (got.c == mirror.gemm(a, b, 12, "stochastic").c).all()


class SilentTransport(Transport):
    """A link whose device never answers."""

    name = "silent"
    quiet_time = 0.01

    def __init__(self):
        self.written = 0

    def write(self, data):
        self.written += len(data)

    def read(self, timeout):
        time.sleep(min(timeout, 0.02))
        return b""


def test_host_times_out_on_a_device_that_never_answers():
    """No answer: the driver retries, then raises DeviceTimeout naming the command, within its timeout."""
    transport = SilentTransport()
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"IDENTIFY failed on silent after 3 attempt\(s\): no answer"):
        Device(transport, timeout=0.1, retries=2)
    assert time.monotonic() - start < 2.0
    assert transport.written == 3 * 7


class FlakyTransport(Transport):
    """Emulator link that corrupts every ``every``-th request and the first response to ``corrupt_cmd``."""

    def __init__(self, emulator, every, corrupt_cmd):
        self.inner = EmulatorTransport(emulator)
        self.every = every
        self.corrupt_cmd = corrupt_cmd
        self.count = 0
        self.corrupted_response = False
        self.name = "flaky"

    def write(self, data):
        self.count += 1
        data = bytearray(data)
        if self.count % self.every == 0:
            data[len(data) // 2] ^= 0x08
        self.inner.write(bytes(data))

    def read(self, timeout):
        data = bytearray(self.inner.read(timeout))
        at = data.find(bytes([0x5A, self.corrupt_cmd]))       # a response to corrupt_cmd in this chunk
        if at >= 0 and not self.corrupted_response and len(data) > at + 6:
            data[at + 6] ^= 0x40                               # its first payload byte (or its CRC)
            self.corrupted_response = True
        return bytes(data)

    def resync(self):
        self.inner.resync()


@pytest.mark.parametrize("corrupt_cmd, k", [(Command.READ_RESULT, 37), (Command.RUN_TILES, 13)])
def test_corrupted_requests_and_responses_are_retried(corrupt_cmd, k):
    """CRC errors in either direction are retried (RUN only when the device reported it did not run; a RUN_TILES
    whose answer was corrupted after it ran is redone whole, lanes re-loaded) and the GEMM is still exact (K-split:
    RUN / READ_RESULT; K <= depth: RUN_TILES)."""
    config = EngineConfig(rows=2, cols=3, wl=8, depth=16, max_k_log2=10)
    transport = FlakyTransport(ProtocolEmulator(config), every=5, corrupt_cmd=corrupt_cmd)
    dev = Device(transport, timeout=0.2)
    dev.seed(3)
    mirror = Mirror(config, 3)
    rng = np.random.default_rng(3)
    a, b = _random(rng, (4, k), 8), _random(rng, (k, 5), 8)
    got = dev.gemm(a, b, 6, "stochastic")
    assert (got.c == mirror.gemm(a, b, 6, "stochastic").c).all()
    assert dev.counters["retries"] >= 5 and transport.corrupted_response
    assert dev.device_counters()["crc_errors"] >= 5


def test_device_with_other_geometry_or_protocol_is_refused():
    emu = ProtocolEmulator(SIM_CONFIG)
    with pytest.raises(DeviceMismatch, match="has rows = 2, expected 4"):
        Device(EmulatorTransport(emu), expect=EngineConfig(rows=4, cols=2, wl=16, depth=32, max_k_log2=12))
    with pytest.raises(DeviceMismatch, match="has clk_freq = 12000000, expected 48000000"):
        Device(EmulatorTransport(emu), expect={"clk_freq": 48_000_000})
    with pytest.raises(DeviceMismatch, match="has b_depth = 1024, expected 32"):
        Device(EmulatorTransport(emu), expect=dataclasses.replace(SIM_CONFIG, b_depth=32))
    version1 = emu.identity.to_bytes()[:28]          # a version-1 device: 28 bytes, no b_depth
    version1 = version1[:4] + bytes([1]) + version1[5:]
    emu.identity = types.SimpleNamespace(to_bytes=lambda: version1)
    with pytest.raises(DeviceMismatch, match="speaks protocol version 1, this host speaks version 3"):
        Device(EmulatorTransport(emu))
    emu.identity = dataclasses.replace(Identity.from_parameters(SIM_CONFIG, 12_000_000, 3_000_000), version=9)
    with pytest.raises(DeviceMismatch, match="speaks protocol version 9, this host speaks version 3"):
        Device(EmulatorTransport(emu))


def test_device_errors_name_the_command():
    """An error status the driver cannot fix by retrying is raised naming the command and the status."""
    dev = open_device("emu", config=SIM_CONFIG)
    with pytest.raises(DeviceError, match="RUN failed on emu: the device answered BAD_ARGUMENT"):
        dev._exchange(Command.RUN, RUN_ARGS.pack(0, 0, 0, 0, 3), expect_len=0)
    with pytest.raises(ValueError, match="K = 8192 exceeds the device's maximum K 4096"):
        dev.gemm(np.zeros((1, 8192), dtype=np.int64), np.zeros((8192, 1), dtype=np.int64), 0, "nearest")


def _allocate(mem, key, digest, length):
    start = mem.reserve(key, length)
    mem.commit(key, digest, start, length)
    return start


def test_resident_memory_evicts_least_recently_used():
    mem = ResidentMemory(32)
    a = _allocate(mem, "a", b"1", 10)
    b = _allocate(mem, "b", b"1", 10)
    _allocate(mem, "c", b"1", 10)
    assert mem.lookup("a", b"1") == a and mem.lookup("a", b"2") is None
    d = _allocate(mem, "d", b"1", 10)       # evicts b, the least recently used
    assert d == b and mem.lookup("b", b"1") is None and mem.lookup("c", b"1") is not None
    assert _allocate(mem, "big", b"1", 32) == 0 and len(mem) == 1
    with pytest.raises(ValueError, match="Cannot allocate 33 entries"):
        mem.reserve("x", 33)


def test_resident_memory_records_a_range_only_when_committed():
    """reserve() records nothing (the write may fail) and forgets the key's old range; commit() records the range
    and drops any other range it overlaps."""
    mem = ResidentMemory(32)
    _allocate(mem, "a", b"1", 16)
    start = mem.reserve("a", 8)
    assert mem.lookup("a", b"1") is None and len(mem) == 0 and start == 0
    _allocate(mem, "b", b"1", 16)
    mem.commit("c", b"1", 8, 16)            # overlaps b
    assert mem.lookup("b", b"1") is None and mem.lookup("c", b"1") == 8


def test_spec_strings():
    with pytest.raises(ValueError, match="Device spec must be 'emu', 'sim:verilator'"):
        open_device("fpga")
    with pytest.raises(TransportError, match="Cannot open serial link '/nonexistent/tty' at 115200 baud"):
        open_device("serial:/nonexistent/tty@115200")
    with pytest.raises(ValueError, match="Baud rate in device spec"):
        open_device("serial:/dev/null@fast")
    dev = open_backend("device:emu", config=SIM_CONFIG, seed=4)
    assert isinstance(dev, Device) and isinstance(dev, Backend)
    assert dev.config == SIM_CONFIG and set(dev.counters) >= {"gemms", "macs", "outputs", "saturated"}
    backend = open_backend("emu:exact", config=SIM_CONFIG, seed=4)
    a = np.ones((3, 5), dtype=np.int64)
    assert (backend.gemm(a, a.T, 0, "nearest").c == dev.gemm(a, a.T, 0, "nearest").c).all()


def test_one_registry_maps_every_spec_to_a_backend():
    """The registry: emu/emu:exact/emu:fast are the emulators, float is no backend, device:/sim:/serial: open the
    Device driver (seeded); every backend satisfies the Backend protocol and returns the one GemmResult type;
    an unknown spec names the known ones, and a missing port is a TransportError naming it."""
    from fxtrain.host.emulator import ExactEmulator, FastEmulator
    from fxtrain.sim.gemm import GemmResult

    assert type(open_backend("emu")) is ExactEmulator and type(open_backend("emu:exact")) is ExactEmulator
    assert type(open_backend("emu:fast")) is FastEmulator
    assert open_backend("float") is None
    a = np.arange(-6, 6, dtype=np.int64).reshape(3, 4)
    for backend in (open_backend("emu", seed=2), open_backend("emu:fast", seed=2),
                    open_backend("device:emu", config=SIM_CONFIG, seed=2)):
        assert isinstance(backend, Backend)
        result = backend.gemm(a, a.T, 1, RoundingMode.NEAREST)
        assert type(result) is GemmResult and (result.c == tiled_gemm(backend.config, a, a.T, 1, "nearest",
                                                                       lane_seeds(2, backend.config.lanes)).c).all()
        state = backend.state_dict()
        backend.load_state_dict(state)
        backend.close()
    with pytest.raises(ValueError, match=r"Unknown backend 'fpga': use one of emu, emu:exact, emu:fast, float, "
                                         r"sim:\.\.\., serial:\.\.\., device:\.\.\."):
        open_backend("fpga")
    with pytest.raises(ValueError, match="Unknown backend 'sim:'"):
        open_backend("sim:")
    with pytest.raises(TypeError, match="takes no options"):
        open_backend("emu", timeout=3)
    with pytest.raises(TransportError, match="Cannot open serial link '/nonexistent/tty9' at 3000000 baud"):
        open_backend("serial:/nonexistent/tty9@3000000")


@pytest.mark.slow
def test_training_layers_through_the_device_equal_the_exact_emulator():
    """LeNet forward and backward with every GEMM offloaded through Device (protocol emulator) gives outputs and
    gradients bit-identical to ExactEmulator (same engine configuration and seed): the backend duck type."""
    torch = pytest.importorskip("torch")
    convert = pytest.importorskip("fxtrain.host.convert")
    from fxtrain.host.emulator import ExactEmulator
    from fxtrain.host.models import build_model

    config = EngineConfig(rows=4, cols=4, wl=16, depth=64, max_k_log2=16)
    torch.manual_seed(0)
    x, y = torch.rand(1, 1, 28, 28), torch.tensor([3])
    results = []
    for backend in (ExactEmulator(config, seed=5), Device(EmulatorTransport(ProtocolEmulator(config)))):
        if isinstance(backend, Device):
            backend.seed(5)
        model = convert.convert(build_model("lenet", 0), backend)
        out = model(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
        assert backend.counters["gemms"] > 0
    (out_e, grads_e), (out_d, grads_d) = results
    assert torch.equal(out_e, out_d)
    assert all(torch.equal(a, b) for a, b in zip(grads_e, grads_d))


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
def test_conv_layer_forward_and_backward_through_the_device_equal_the_exact_emulator(device, mode):
    """A small strided, padded Conv2d's forward output, input gradient and weight gradient computed through the
    device (protocol emulator, and the SoC's RTL under Verilator and Icarus) are bit-identical to ExactEmulator
    with the same engine configuration and lane seed."""
    torch = pytest.importorskip("torch")
    convert = pytest.importorskip("fxtrain.host.convert")
    from fxtrain.host.emulator import ExactEmulator

    seed = 11
    print("seed", seed)
    results = []
    for backend in (ExactEmulator(device.config, seed=seed), device):
        backend.seed(seed)
        torch.manual_seed(seed)
        conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1)
        x = torch.rand(2, 2, 6, 6, requires_grad=True)
        model = convert.convert(torch.nn.Sequential(conv), backend, rounding=mode, seed=seed)
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append((out.detach(), x.grad.clone(), model[0].weight.grad.clone()))
    for got, want in zip(results[1], results[0]):
        assert torch.equal(got, want)
    assert results[0][0].abs().sum() > 0 and results[0][1].abs().sum() > 0 and results[0][2].abs().sum() > 0


class CorruptWriteB(EmulatorTransport):
    """The issue's link: while ``corrupt`` is set, one payload bit of every WRITE_B frame is flipped."""

    corrupt = False

    def write(self, data):
        data = bytearray(data)
        if self.corrupt and len(data) > 12 and data[1] == Command.WRITE_B:
            data[10] ^= 0x01
        super().write(bytes(data))


def test_failed_operand_write_leaves_nothing_stale():
    """Issue 11 reproduction: a GEMM whose WRITE_B keeps failing raises; the same GEMM with the same b_key after the
    link recovers re-sends B (nothing was recorded resident) and equals the golden model."""
    cfg = SIM_CONFIG
    transport = CorruptWriteB(ProtocolEmulator(cfg))
    dev = Device(transport, retries=2)
    dev.seed(0)
    rng = np.random.default_rng(3)
    a, b = rng.integers(-1000, 1000, (2, 8)), rng.integers(-1000, 1000, (8, 2))
    transport.corrupt = True
    with pytest.raises(DeviceError, match="WRITE_B failed on emu after 3 attempt"):
        dev.gemm(a, b, 4, "nearest", b_key="W")
    transport.corrupt = False
    sent = dev.counters["b_entries_sent"]
    got = dev.gemm(a, b, 4, "nearest", b_key="W")
    assert dev.counters["b_entries_sent"] - sent == 8
    assert np.array_equal(got.c, tiled_gemm(cfg, a, b, 4, "nearest", lane_seeds(0, 2)).c)


def test_failed_gemm_leaves_the_lanes_where_they_were():
    """A stochastic GEMM that raises after some of its tiles drained does not move the lanes: the next GEMMs equal
    the golden model continued from before the failed call. (B memory as deep as A's, so the K = 40 GEMM re-sends
    its B chunks for the second tile row, where the corruption starts.)"""
    cfg = dataclasses.replace(SIM_CONFIG, b_depth=SIM_CONFIG.depth)
    transport = CorruptWriteB(ProtocolEmulator(cfg))
    dev = Device(transport, retries=1)
    dev.seed(9)
    mirror = Mirror(cfg, 9)
    rng = np.random.default_rng(9)
    a, b = _random(rng, (6, 40), 16), _random(rng, (40, 2), 16)
    # corrupt B only after the first tile row drained: the call fails half-way
    real_write = transport.write

    def write(data):
        transport.corrupt = dev.counters["runs"] >= 2
        real_write(data)
    transport.write = write
    with pytest.raises(DeviceError):
        dev.gemm(a, b, 10, "stochastic")
    assert dev.counters["runs"] >= 2 and dev.lane_state == mirror.state
    transport.write = real_write
    transport.corrupt = False
    for _ in range(2):
        assert np.array_equal(dev.gemm(a, b, 10, "stochastic").c, mirror.gemm(a, b, 10, "stochastic").c)
        assert dev.lane_state == mirror.state


class NoisyLink(Transport):
    """Wraps a transport: with probability ``p``, each request frame and each chunk of bytes from the device gets one
    bit flipped or one byte dropped (chosen at random). ``events`` counts what was done."""

    def __init__(self, inner, p, seed):
        self.inner, self.p, self.rng = inner, p, random.Random(seed)
        self.name = f"noisy-{inner.name}"
        self.enabled = False
        self.events = dict.fromkeys(("request flip", "request drop", "response flip", "response drop"), 0)

    @property
    def quiet_time(self):
        return self.inner.quiet_time

    @quiet_time.setter
    def quiet_time(self, value):
        self.inner.quiet_time = value

    def _mangle(self, data, direction):
        if not self.enabled or not data or self.rng.random() >= self.p:
            return data
        data = bytearray(data)
        i = self.rng.randrange(len(data))
        if self.rng.random() < 0.5:
            data[i] ^= 1 << self.rng.randrange(8)
            self.events[direction + " flip"] += 1
        else:
            del data[i]
            self.events[direction + " drop"] += 1
        return bytes(data)

    def write(self, data):
        self.inner.write(self._mangle(data, "request"))

    def read(self, timeout):
        return self._mangle(self.inner.read(timeout), "response")

    def resync(self):
        self.inner.resync()

    def close(self):
        self.inner.close()


def _noisy_gemms(dev, link, count, seed, max_dim):
    """``count`` random GEMMs (odd shapes, K up to beyond depth, both modes, weights reused under b_keys) over a
    noisy link: returns (equal to the golden model, raised, silently wrong)."""
    rng = np.random.default_rng(seed)
    cfg = dev.config
    dev.seed(seed)
    mirror = Mirror(cfg, seed)
    weights = {}
    ok = raised = wrong = 0
    link.enabled = True
    for i in range(count):
        k = int(rng.integers(1, max_dim[1] + 1))
        key = ("w", int(rng.integers(0, 3)), k)
        b = weights.setdefault(key, _random(rng, (k, int(rng.integers(1, max_dim[2] + 1))), cfg.wl))
        a = _random(rng, (int(rng.integers(1, max_dim[0] + 1)), k), cfg.wl)
        shift, mode = int(rng.integers(0, 20)), ("nearest", "stochastic")[i % 2]
        try:
            got = dev.gemm(a, b, shift, mode, b_key=key)
        except DeviceError:
            raised += 1
            continue
        want = mirror.gemm(a, b, shift, mode)
        same = np.array_equal(got.c, want.c) and np.array_equal(got.saturated, want.saturated)
        ok += same
        wrong += not same
    link.enabled = False
    return ok, raised, wrong


def test_noisy_link_never_returns_a_wrong_gemm():
    """Random bit flips and dropped bytes in both directions, 400 GEMMs through the protocol emulator: every GEMM
    equals the golden model bit for bit or raises DeviceError; none is silently wrong."""
    seed = 1101
    print("seed", seed)
    link = NoisyLink(EmulatorTransport(ProtocolEmulator(SIM_CONFIG)), p=0.04, seed=seed)
    dev = Device(link, timeout=0.02, retries=3)
    ok, raised, wrong = _noisy_gemms(dev, link, 400, seed, (7, 70, 5))
    print(f"noisy emu link: {ok} equal, {raised} raised, {wrong} silently wrong; link events {link.events}; "
          f"driver retries {dev.counters['retries']}")
    assert wrong == 0
    assert ok >= 300 and min(link.events.values()) >= 20 and dev.counters["retries"] > 100


@pytest.mark.parametrize("simulator", ["verilator"])
def test_noisy_link_never_returns_a_wrong_gemm_on_the_rtl(simulator, build_root):
    """The same over the SoC's RTL in the free-running Verilator harness (shorter: rounds of 10 GEMMs until at
    least 5 faults were injected, since each lost frame costs the driver's 2 s timeout): equal or raised, never
    silently wrong."""
    ok, why = simulator_available(simulator)
    if not ok:
        pytest.skip(f"{simulator} unavailable: {why}")
    from fxtrain.host.transport import SimulationTransport
    seed = 1102
    print("seed", seed)
    link = NoisyLink(SimulationTransport(simulator, SIM_CONFIG, build_root=build_root), p=0.03, seed=seed)
    ok = raised = wrong = gemms = 0
    with Device(link, timeout=2.0, retries=3) as dev:
        # Which bytes a fault hits depends on how the harness's output is chunked in time, so the number of faults
        # in a fixed run varies: run rounds of 10 GEMMs until at least 5 faults were injected (at most 4 rounds).
        for round_ in range(4):
            counts = _noisy_gemms(dev, link, 10, seed + round_, (5, 40, 3))
            ok, raised, wrong, gemms = ok + counts[0], raised + counts[1], wrong + counts[2], gemms + 10
            if sum(link.events.values()) >= 5:
                break
        print(f"noisy {simulator} link: {gemms} GEMMs, {ok} equal, {raised} raised, {wrong} silently wrong; link "
              f"events {link.events}; driver retries {dev.counters['retries']}")
        assert wrong == 0
        assert ok >= 0.6 * gemms and sum(link.events.values()) >= 5
