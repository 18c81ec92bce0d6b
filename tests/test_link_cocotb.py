"""cocotb benches of the host link on Verilator and Icarus (``sim/benches/link_bench.py``).

* UART bit level (both simulators): the two-clock UART SoC at the FT2232H's 12 Mbaud (the iCEBreaker's variant) from a
  48 MHz UART clock (4 cycles per bit), answers a small GEMM and bad frames bit-exactly like ``ProtocolEmulator``
  with the host's baud rate 1.5 % slow, exact and 1.5 % fast, once with the engine clock 2.8 times slower than
  the UART clock and once 1.3 times faster (periods with no common small multiple, unrelated phases).
* UART bit level, single clock (one simulator): the UART SoC with UART clock = engine clock (the iCEBreaker
  default) at 12 MHz / 3 Mbaud, same checks.
* Receive-buffer rule (one simulator): the two-clock UART SoC with a 64-byte receive buffer answers the pipelined
  driver's frames, streamed at line rate with at most 64 bytes unanswered, exactly like ``ProtocolEmulator``;
  streamed with no limit, a READ_RESULT burst overflows it; at both engine clocks.
* Random stalls (both simulators): RUN_TILES streams through the byte-stream SoC with the input's valid and the
  output's ready dropped at random are answered exactly like ``ProtocolEmulator``.
* Byte-level throughput: WRITE_B frames sent back to back through the byte-stream SoC are absorbed at the rate
  the executor's documented latency gives (one byte per cycle, plus one cycle per operand entry), and the
  READ_RESULT response leaves at one byte per cycle; the measured numbers are printed.
"""

import json

import pytest

from fxtrain.rtl.soc import AcceleratorSoC
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.protocol import entry_bytes
from fxtrain.sim.runner import available_simulators

CONFIG = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12)
PARAMS = dict(rows=CONFIG.rows, cols=CONFIG.cols, wl=CONFIG.wl, depth=CONFIG.depth, max_k_log2=CONFIG.max_k_log2,
              clk_freq=12_000_000, baud=3_000_000, frame_timeout=2000, seed=7)
# The UART SoC: nominal engine clock 18 MHz (reported by IDENTIFY), UART clock 48 MHz, 12 Mbaud (divisor 4, the
# receiver's minimum). The benches run the engine's clock at ENGINE_PS: 17.3 MHz (UART faster) and 61.7 MHz
# (engine faster); the frame timeout (2000 engine cycles) stays far above a byte time either way.
UART_PARAMS = dict(PARAMS, clk_freq=18_000_000, uart_freq=48_000_000, baud=12_000_000)
ENGINE_PS = [57_802, 16_206]


def _uart_soc(**kwargs):
    return AcceleratorSoC(CONFIG, UART_PARAMS["clk_freq"], UART_PARAMS["baud"], uart_freq=UART_PARAMS["uart_freq"],
                          frame_timeout=UART_PARAMS["frame_timeout"], **kwargs)


def test_uart_bit_level_two_clocks_12mbaud(simulator, run_cocotb):
    """Bit-level UART exchange at 4 UART cycles per bit, ±1.5 % baud error, engine clock slower and faster than
    the UART clock: every response equals the golden model's."""
    soc = _uart_soc()
    assert soc.divisor == 4
    params = dict(UART_PARAMS, baud_errors=[-0.015, 0.0, 0.015], engine_ps=ENGINE_PS)
    assert run_cocotb(soc, "fxtrain_soc_uart", "fxtrain.sim.benches.link_bench", simulator,
                      dict(params, testcase="uart_bit_level")) >= 1


def test_uart_bit_level_single_clock_3mbaud(simulator, run_cocotb):
    """The single-clock UART variant (UART clock = engine clock, as on the iCEBreaker by default) at 12 MHz and
    3 Mbaud (4 cycles per bit), ±1.5 % baud error: every response equals the golden model's. One simulator."""
    if simulator != available_simulators()[-1]:
        pytest.skip(f"single-clock UART bench runs on {available_simulators()[-1]} only (one extra SoC build)")
    soc = AcceleratorSoC(CONFIG, PARAMS["clk_freq"], PARAMS["baud"], frame_timeout=PARAMS["frame_timeout"])
    assert soc.divisor == 4 and not soc.two_clocks
    params = dict(PARAMS, uart_freq=PARAMS["clk_freq"], baud_errors=[-0.015, 0.0, 0.015], engine_ps=[0])
    assert run_cocotb(soc, "fxtrain_soc_uart1", "fxtrain.sim.benches.link_bench", simulator,
                      dict(params, testcase="uart_bit_level")) >= 1


class _Recorder:
    """Emulator transport that records every frame the driver writes."""

    def __init__(self, inner):
        self.inner, self.frames, self.name, self.quiet_time = inner, [], "recorder", 0.0

    def write(self, data):
        self.frames.append(bytes(data))
        self.inner.write(data)

    def read(self, timeout):
        return self.inner.read(timeout)

    def resync(self):
        self.inner.resync()


def _pipelined_case(rx_buffer):
    """The pipelined driver's frames for a seed and two GEMMs (the second with B resident), the golden
    responses, and a READ_RESULT burst."""
    import numpy as np

    from fxtrain.host.device import Device
    from fxtrain.host.transport import EmulatorTransport
    from fxtrain.sim.protocol import ProtocolEmulator
    from fxtrain.sim.wire import Command, encode_request

    def emulator():
        return ProtocolEmulator(CONFIG, UART_PARAMS["clk_freq"], UART_PARAMS["baud"], UART_PARAMS["frame_timeout"],
                                rx_buffer)

    rec = _Recorder(EmulatorTransport(emulator()))
    dev = Device(rec)
    assert dev.pipelined and dev.identity.rx_buffer == rx_buffer
    dev.seed(5)
    rng = np.random.default_rng(5)
    a, b = rng.integers(-3000, 3000, (5, 9)), rng.integers(-3000, 3000, (9, 3))
    dev.gemm(a, b, 6, "stochastic", b_key="W")
    dev.gemm(a + 1, b, 6, "stochastic", b_key="W")
    golden = emulator()
    parts = [dict(name="driver", window=rx_buffer, frames=[f.hex() for f in rec.frames],
                  expected=b"".join(golden.feed(f) for f in rec.frames).hex())]
    burst = [encode_request(Command.READ_RESULT, i) for i in range(30)]
    parts.append(dict(name="burst", window=None, frames=[f.hex() for f in burst],
                      expected=b"".join(golden.feed(f) for f in burst).hex()))
    return dict(parts=parts)


def test_uart_receive_buffer_rule(simulator, run_cocotb, tmp_path):
    """Frames streamed at line rate with at most rx_buffer bytes unanswered are answered exactly like the golden
    model; a READ_RESULT burst with no limit overflows the buffer (responses differ)."""
    if simulator != available_simulators()[-1]:
        pytest.skip(f"bit-level UART bench runs on {available_simulators()[-1]} only (one extra SoC build)")
    rx_buffer = 64
    soc = _uart_soc(rx_buffer=rx_buffer)
    frames_file = tmp_path / "frames.json"
    frames_file.write_text(json.dumps(_pipelined_case(rx_buffer)))
    assert run_cocotb(soc, "fxtrain_soc_uart64", "fxtrain.sim.benches.link_bench", simulator,
                      dict(UART_PARAMS, frames_file=str(frames_file), engine_ps=ENGINE_PS,
                           testcase="uart_pipelined")) >= 1


def test_byte_level_throughput(simulator, run_cocotb, tmp_path):
    """Back-to-back WRITE_B frames: payload absorbed at E/(E+1) bytes per cycle; responses at 1 byte/cycle."""
    soc = AcceleratorSoC(CONFIG, PARAMS["clk_freq"], PARAMS["baud"], frame_timeout=PARAMS["frame_timeout"],
                         byte_stream=True)
    result_file = tmp_path / "throughput.json"
    run_cocotb(soc, "fxtrain_soc", "fxtrain.sim.benches.link_bench", simulator,
               dict(PARAMS, result_file=str(result_file), testcase="byte_throughput"))
    result = json.loads(result_file.read_text())
    print(simulator, result)
    e = entry_bytes(CONFIG, "B")
    # 4 frames of 7 header/CRC bytes + 4 argument bytes + depth entries of E bytes, one stall cycle per entry
    frame_bytes = 7 + 4 + CONFIG.depth * e
    frame_cycles = frame_bytes + CONFIG.depth
    assert result["wire_bytes_in"] == 4 * frame_bytes
    assert result["cycles_in"] <= 4 * frame_cycles + 4 * 8      # plus at most a few cycles per response
    assert result["bytes_per_cycle_out"] == 1.0


def _golden_case(config, frames, tmp_path):
    """A ``frames.json`` for link_bench's ``byte_stalls``: the request frames and the golden emulator's answers."""
    from fxtrain.sim.protocol import ProtocolEmulator

    golden = ProtocolEmulator(config, PARAMS["clk_freq"], PARAMS["baud"], PARAMS["frame_timeout"])
    case = dict(frames=[f.hex() for f in frames], expected=b"".join(golden.feed(f) for f in frames).hex())
    frames_file = tmp_path / "frames.json"
    frames_file.write_text(json.dumps(case))
    return frames_file


def test_run_tiles_with_random_stalls(simulator, run_cocotb, tmp_path):
    """RUN_TILES (odd tile counts, K=1, saturating operands, both rounding modes, bad arguments) with random
    valid/ready stalls on the byte streams: responses equal the golden emulator's byte for byte."""
    import random
    import struct

    from fxtrain.sim.protocol import Command, encode_request
    from fxtrain.sim.benches.link_bench import run_tiles_requests

    seed = PARAMS["seed"]
    frames = [encode_request(Command.SET_SEEDS, 1, struct.pack("<2I", 3, 11))]
    frames += run_tiles_requests(CONFIG, random.Random(seed), 2)
    frames_file = _golden_case(CONFIG, frames, tmp_path)
    soc = AcceleratorSoC(CONFIG, PARAMS["clk_freq"], PARAMS["baud"], frame_timeout=PARAMS["frame_timeout"],
                         byte_stream=True)
    assert run_cocotb(soc, "fxtrain_soc", "fxtrain.sim.benches.link_bench", simulator,
                      dict(PARAMS, frames_file=str(frames_file), valid_probability=0.6, ready_probability=0.15,
                           testcase="byte_stalls")) >= 1


def test_expand_with_random_stalls(simulator, run_cocotb, tmp_path):
    """EXPAND (3x5 array, map wrapping past the last B entry, then a random map; RUN, RUN_TILES, READ_RESULT,
    rejected EXPANDs, READ_COUNTERS) through the byte-stream SoC with an expander, random valid/ready stalls on
    the byte streams: responses equal the golden emulator's byte for byte."""
    import numpy as np

    from fxtrain.sim.benches.expand_frames import expand_requests
    from fxtrain.sim.protocol import Command

    seed = PARAMS["seed"] + 13
    print("seed", seed)
    config = EngineConfig(rows=3, cols=5, wl=8, depth=32, max_k_log2=12, b_depth=128, expander=True)
    rng = np.random.default_rng(seed)
    frames = expand_requests(config, rng, 10, f_base=125) + expand_requests(config, rng, 40)
    # no READ_COUNTERS: the engine's stall counters count host timing, which the emulator lacks
    frames = [f for f in frames if f[1] != Command.READ_COUNTERS]
    frames_file = _golden_case(config, frames, tmp_path)
    soc = AcceleratorSoC(config, PARAMS["clk_freq"], PARAMS["baud"], frame_timeout=PARAMS["frame_timeout"],
                         byte_stream=True)
    params = dict(PARAMS, rows=3, cols=5, wl=8, b_depth=128, frames_file=str(frames_file), seed=seed,
                  valid_probability=0.6, ready_probability=0.3, testcase="byte_stalls")
    assert run_cocotb(soc, "fxtrain_soc_expand", "fxtrain.sim.benches.link_bench", simulator, params) >= 1
