"""cocotb benches of the host link: UART bit timing at a board's clock/baud ratio, byte-level throughput.

``uart_bit_level`` runs on the UART variant of ``AcceleratorSoC``, with its two clocks (``uart_clk`` at the
nominal ``uart_freq``, the engine's ``clk`` at each period of ``engine_ps`` in turn, reset between them): the
bench is the host's serial port. It drives ``rx`` bit by bit at the requested baud rate times ``1 + baud_error`` for each error in the bench
parameter ``baud_errors`` (e.g. ``[-0.015, 0, 0.015]``), decodes ``tx`` bit by bit at the nominal rate, and
requires every response to equal, byte for byte, what :class:`fxtrain.sim.protocol.ProtocolEmulator` answers
to the same requests (a small GEMM, a corrupted frame, an unknown command).

``uart_pipelined`` runs on the UART variant with a small receive buffer, at each engine period of
``engine_ps``: it streams recorded request frames
(the pipelined driver's) at line rate under the receive-buffer rule of ``docs/protocol.md`` §2.2 and requires the
golden responses; then it streams READ_RESULT requests with no limit and requires the responses to differ
(the buffer overflowed), so the rule is shown to be both sufficient and needed. Frames and expected responses
come from the JSON file named by ``frames_file``.

``byte_throughput`` runs on the byte-stream variant: it sends WRITE_B frames back to back with ``valid``
always high and measures payload bytes per clock cycle the SoC absorbs, and the response byte rate of
READ_RESULT; the numbers are written as JSON to the file named by ``result_file``.

``byte_stalls`` runs on the byte-stream variant: it sends recorded request frames (``frames_file``, e.g. RUN_TILES
streams) with the input's ``valid`` and the output's ``ready`` dropped at random (``valid_probability``,
``ready_probability``, seeded by ``seed``) and requires exactly the expected response bytes.

Bench parameters (``fxtrain.sim.runner.bench_params``): ``rows, cols, wl, depth, max_k_log2, clk_freq, baud,
frame_timeout`` (the SoC's, for the golden model), ``uart_freq`` (the UART clock), ``engine_ps`` (list of
engine clock periods in ps, UART variant), ``seed``, ``baud_errors``, ``result_file``, ``frames_file``,
``valid_probability``, ``ready_probability``, ``testcase``
(run only that test: the two benches need different SoC variants).
"""

from __future__ import annotations

import json
import random
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, Timer

from fxtrain.sim.benches.drivers import StreamSink, StreamSource, settle_combinational, start_clock_and_reset
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.payloads import RUN_ARGS, RUN_TILES_ARGS, WRITE_HEADER, max_tiles, run_tiles_args
from fxtrain.sim.protocol import Command, ProtocolEmulator, encode_request, entry_bytes, pack_values
from fxtrain.sim.wire import ResponseParser
from fxtrain.sim.runner import bench_params

__all__ = ["uart_bit_level", "byte_throughput", "byte_stalls", "bench_config", "gemm_requests", "run_tiles_requests",
           "without_timing_counters"]


def bench_config(params):
    return EngineConfig(rows=params["rows"], cols=params["cols"], wl=params["wl"], depth=params["depth"],
                        max_k_log2=params["max_k_log2"], b_depth=params.get("b_depth"))


def gemm_requests(config, rng, seq0=1):
    """Request frames of one tile GEMM (seeds, rounding, A/B writes, draining run, read) plus two bad frames."""
    lo, hi = -(1 << (config.wl - 1)), (1 << (config.wl - 1)) - 1
    k = 3
    vb = (config.wl + 7) // 8
    a = [rng.randint(lo, hi) for _ in range(k * config.rows)]
    b = [rng.randint(lo, hi) for _ in range(k * config.cols)]
    seeds = [rng.randint(1, 2**32 - 1) for _ in range(config.lanes)]
    frames = [
        encode_request(Command.IDENTIFY, seq0),
        encode_request(Command.SET_SEEDS, seq0 + 1, struct.pack(f"<{len(seeds)}I", *seeds)),
        encode_request(Command.SET_ROUNDING, seq0 + 2, bytes([config.wl - 2, 1])),
        encode_request(Command.WRITE_A, seq0 + 3, WRITE_HEADER.pack(0, k) + pack_values(a, vb)),
        encode_request(Command.WRITE_B, seq0 + 4, WRITE_HEADER.pack(1, k) + pack_values(b, vb)),
        encode_request(Command.RUN, seq0 + 5, RUN_ARGS.pack(0, 0, 1, k, 3)),
        encode_request(Command.READ_RESULT, seq0 + 6),
    ]
    bad = bytearray(encode_request(Command.IDENTIFY, seq0 + 7))
    bad[-1] ^= 0x10
    frames += [bytes(bad), encode_request(0x7E, seq0 + 8, b"\x01\x02")]
    return frames


async def _uart_send(rx, data, bit_ps):
    for byte in data:
        for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            rx.value = bit
            await Timer(bit_ps, unit="ps")


async def _uart_receive(tx, bit_ps, out):
    while True:
        await FallingEdge(tx)
        await Timer(bit_ps // 2, unit="ps")
        if int(tx.value):
            continue
        byte = 0
        for i in range(8):
            await Timer(bit_ps, unit="ps")
            byte |= int(tx.value) << i
        await Timer(bit_ps, unit="ps")
        assert int(tx.value) == 1, "stop bit of a device byte is low"
        out.append(byte)


def _selected(name):
    """Whether the bench parameter ``testcase`` (if given) selects cocotb test ``name``."""
    return bench_params().get("testcase", name) == name


@cocotb.test(skip=not _selected("uart_bit_level"))
async def uart_bit_level(dut):
    """For each engine clock period in ``engine_ps`` (bench parameter), requests sent bit by bit at
    baud * (1 + error) get the golden model's responses, bit-decoded."""
    p = bench_params()
    config = bench_config(p)
    rng = random.Random(p["seed"])
    checked = 0
    for engine_ps in p["engine_ps"]:
        emulator = ProtocolEmulator(config, p["clk_freq"], p["baud"], p["frame_timeout"])   # the device was reset
        received, device_bit_ps, tasks = await _uart_start(dut, p, engine_ps)
        dut._log.info(f"seed {p['seed']}: engine clock {engine_ps} ps, UART clock {p['uart_freq']} Hz, "
                      f"{p['baud']} baud, bit {device_bit_ps} ps")
        for error in p["baud_errors"]:
            host_bit_ps = round(1e12 / (p["baud"] * (1 + error)))
            for frame in gemm_requests(config, rng, seq0=checked + 1):
                expected = emulator.feed(frame)
                start = len(received)
                await _uart_send(dut.rx, frame, host_bit_ps)
                for _ in range(200 + 20 * len(expected)):
                    if len(received) - start >= len(expected):
                        break
                    await Timer(device_bit_ps, unit="ps")
                got = bytes(received[start:])
                assert got == expected, (f"engine {engine_ps} ps, baud error {error:+.3f}: request {frame.hex()} "
                                         f"answered {got.hex()}, golden {expected.hex()}")
                checked += 1
        _stop(tasks)
    dut._log.info(f"{checked} frames answered bit-exactly at engine periods {p['engine_ps']} ps and baud errors "
                  f"{p['baud_errors']}")


async def _uart_start(dut, p, engine_ps):
    """Both clocks, reset and the device-side bit period of the UART SoC.

    ``uart_clk`` runs at the nominal ``uart_freq`` (its period times the divisor is the device's bit period);
    ``clk`` (the engine's ``sync`` domain) runs with period ``engine_ps``, which the bench chooses freely: only
    the frame timeout counts its cycles, and the golden model needs only the nominal ``clk_freq`` that IDENTIFY
    reports. The two clocks start at unrelated phases. Both resets are held together for a few cycles of the
    slower clock. Returns ``(received list, bit ps, clock tasks)``; cancel the tasks to end the case.
    """
    uart_ps = 2 * round(0.5e12 / p["uart_freq"])
    two_clocks = hasattr(dut, "uart_clk")          # the single-clock UART variant has only clk (at uart_freq)
    settle_combinational(dut)
    dut.rx.value = 1
    dut.rst.value = 1
    tasks = []
    if two_clocks:
        dut.uart_rst.value = 1
        tasks.append(cocotb.start_soon(Clock(dut.uart_clk, uart_ps, unit="ps").start()))
        await Timer(uart_ps // 3 + 1, unit="ps")
    else:
        engine_ps = uart_ps
    tasks.append(cocotb.start_soon(Clock(dut.clk, engine_ps, unit="ps").start()))
    await Timer(6 * max(uart_ps, engine_ps), unit="ps")
    dut.rst.value = 0
    if two_clocks:
        dut.uart_rst.value = 0
    await Timer(6 * max(uart_ps, engine_ps), unit="ps")
    received = []
    bit_ps = uart_ps * round(p["uart_freq"] / p["baud"])
    tasks.append(cocotb.start_soon(_uart_receive(dut.tx, bit_ps, received)))
    return received, bit_ps, tasks


def _stop(tasks):
    for task in tasks:
        task.cancel()


async def _send_windowed(dut, frames, window, received, bit_ps):
    """Send ``frames`` back to back at line rate, but never more than ``window`` bytes of requests whose
    responses have not completely arrived (``window=None``: no limit). Returns the bytes received."""
    parser = ResponseParser()
    answered, parsed = 0, 0
    sizes = [len(f) for f in frames]
    for i, frame in enumerate(frames):
        while window is not None and sum(sizes[answered:i]) + len(frame) > window:
            await Timer(bit_ps, unit="ps")
            answered += len(parser.feed(bytes(received[parsed:])))
            parsed = len(received)
        await _uart_send(dut.rx, frame, bit_ps)
    for _ in range(400 * len(frames)):          # let the last responses arrive
        await Timer(bit_ps, unit="ps")
        answered += len(parser.feed(bytes(received[parsed:])))
        parsed = len(received)
        if answered >= len(frames):
            break
    return bytes(received)


@cocotb.test(skip=not _selected("uart_pipelined"))
async def uart_pipelined(dut):
    """The receive-buffer rule (docs/protocol.md §2.2) over the UART SoC: requests streamed at line rate with at
    most ``rx_buffer`` bytes unanswered get exactly the golden responses; the same requests streamed with no
    limit overflow the buffer (the control that shows the rule is needed and the bench can fail)."""
    p = bench_params()
    with open(p["frames_file"]) as f:
        case = json.load(f)
    for engine_ps in p["engine_ps"]:
        received, bit_ps, tasks = await _uart_start(dut, p, engine_ps)
        for part in case["parts"]:
            frames = [bytes.fromhex(h) for h in part["frames"]]
            expected = bytes.fromhex(part["expected"])
            start = len(received)
            got = (await _send_windowed(dut, frames, part["window"], received, bit_ps))[start:]
            dut._log.info(f"engine {engine_ps} ps, {part['name']}: {len(frames)} frames, "
                          f"{sum(map(len, frames))} bytes in, {len(got)} out, window {part['window']}")
            if part["window"] is not None:
                assert got == expected, f"engine {engine_ps} ps, {part['name']}: responses differ from the golden model"
            else:
                assert got != expected, (f"engine {engine_ps} ps, {part['name']}: no byte was lost although the "
                                         "buffer was overrun")
        _stop(tasks)


@cocotb.test(skip=not _selected("byte_throughput"))
async def byte_throughput(dut):
    """Payload bytes per cycle the SoC absorbs in WRITE_B frames sent back to back, and its response rate."""
    p = bench_params()
    config = bench_config(p)
    period_ns = 10
    await start_clock_and_reset(dut, period_ns=period_ns)
    source = StreamSource(dut, "rx_bytes", 8)
    sink = StreamSink(dut, "tx_bytes", 8)
    rng = random.Random(p["seed"])
    vb = (config.wl + 7) // 8
    e = entry_bytes(config, "B")
    lo, hi = -(1 << (config.wl - 1)), (1 << (config.wl - 1)) - 1
    frames = []
    for i in range(4):
        values = [rng.randint(lo, hi) for _ in range(config.depth * config.cols)]
        frames.append(encode_request(Command.WRITE_B, i, WRITE_HEADER.pack(0, config.depth) +
                                     pack_values(values, vb)))
    read = encode_request(Command.READ_RESULT, 9)
    emulator = ProtocolEmulator(config, p["clk_freq"], p["baud"], p["frame_timeout"])
    expected = b"".join(emulator.feed(f) for f in frames)
    for frame in frames:
        for byte in frame:
            source.send(byte)
    await source.wait_idle()
    writes = source.transfer_times
    sent = sum(len(f) for f in frames)
    await sink.wait_for(len(expected))
    in_cycles = (writes[-1] - writes[0]) / period_ns + 1
    first_out = len(sink.received)
    expected += emulator.feed(read)
    for byte in read:
        source.send(byte)
    await sink.wait_for(len(expected))
    out_times = sink.transfer_times[first_out:]
    out_cycles = (out_times[-1] - out_times[0]) / period_ns + 1
    assert bytes(sink.received) == expected, "responses differ from the golden model"
    result = {"wire_bytes_in": sent, "cycles_in": in_cycles, "bytes_per_cycle_in": sent / in_cycles,
              "entry_bytes": e, "response_bytes": len(out_times), "cycles_out": out_cycles,
              "bytes_per_cycle_out": len(out_times) / out_cycles}
    dut._log.info(f"throughput: {result}")
    if p.get("result_file"):
        with open(p["result_file"], "w") as f:
            json.dump(result, f)



def run_tiles_requests(config, rng, seq):
    """RUN_TILES frames: 3 tiles of K=5 walking B by 5 (saturating operands, both rounding modes), K=1 with
    b_step 0, READ_RESULT (the last tile again), and every bad argument (n_tiles 0 or above max_tiles, K 0, A
    range, the last tile's B range one entry beyond the B memory, B_STEP above the B depth, FLAGS not
    CLEAR|DRAIN, B_BASE beyond the B memory by a multiple of twice its depth, a short payload, and last the first
    tile's B range one entry beyond the B memory). For an engine of depth 32 and a B depth up to 16384 (B_BASE
    is a 16-bit field)."""
    if config.depth != 32 or config.b_depth > 16384:
        raise ValueError(f"run_tiles_requests is written for depth 32 and b_depth <= 16384, not {config.depth} "
                         f"and {config.b_depth}")
    bd = config.b_depth
    lo, hi = -(1 << (config.wl - 1)), (1 << (config.wl - 1)) - 1
    vb = (config.wl + 7) // 8
    a = [rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(5 * config.rows)]
    b = [rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(15 * config.cols)]
    tiles = run_tiles_args
    return [encode_request(Command.WRITE_A, seq, WRITE_HEADER.pack(20, 5) + pack_values(a, vb)),
            encode_request(Command.WRITE_B, seq + 1, WRITE_HEADER.pack(17, 15) + pack_values(b, vb)),
            encode_request(Command.SET_ROUNDING, seq + 2, bytes([9, 1])),
            encode_request(Command.RUN_TILES, seq + 3, tiles(20, 17, 5, 5, 3)),
            encode_request(Command.SET_ROUNDING, seq + 4, bytes([16, 0])),
            encode_request(Command.RUN_TILES, seq + 5, tiles(24, 31, 0, 1, 4)),
            encode_request(Command.READ_RESULT, seq + 6),
            encode_request(Command.RUN_TILES, seq + 7, tiles(20, 17, 5, 5, 0)),
            encode_request(Command.RUN_TILES, seq + 8, tiles(20, 17, 5, 5, max_tiles(config) + 1)),
            encode_request(Command.RUN_TILES, seq + 9, tiles(20, 17, 5, 0, 1)),
            encode_request(Command.RUN_TILES, seq + 10, tiles(28, 0, 5, 5, 1)),
            encode_request(Command.RUN_TILES, seq + 11, tiles(20, bd - 14, 5, 5, 3)),
            encode_request(Command.RUN_TILES, seq + 12, tiles(0, 0, 0xFFFF, 2, 2)),
            encode_request(Command.RUN_TILES, seq + 13, tiles(20, 17, bd + 1, 5, 1)),
            encode_request(Command.RUN_TILES, seq + 14, RUN_TILES_ARGS.pack(5, 20, 17, 5, 3, 1)),
            encode_request(Command.RUN_TILES, seq + 15, tiles(20, 17 + 2 * bd, 5, 5, 1)),
            encode_request(Command.RUN_TILES, seq + 16, b"\x00" * 9),
            encode_request(Command.RUN_TILES, seq + 17, tiles(20, bd - 4, 5, 5, 1))]


@cocotb.test(skip=not _selected("byte_stalls"))
async def byte_stalls(dut):
    """Recorded frames through the byte-stream SoC with random stalls on both byte streams: the responses equal
    the expected bytes (no byte lost, repeated or invented while the engine or the link waits)."""
    p = bench_params()
    with open(p["frames_file"]) as f:
        case = json.load(f)
    await start_clock_and_reset(dut)
    dut._log.info(f"seed {p['seed']}: valid probability {p['valid_probability']}, ready probability "
                  f"{p['ready_probability']}")
    source = StreamSource(dut, "rx_bytes", 8, rng=random.Random(p["seed"]),
                          valid_probability=p["valid_probability"])
    sink = StreamSink(dut, "tx_bytes", 8, rng=random.Random(p["seed"] + 1), ready_probability=p["ready_probability"])
    expected = bytes.fromhex(case["expected"])
    for frame in case["frames"]:
        for byte in bytes.fromhex(frame):
            source.send(byte)
    await sink.wait_for(len(expected))
    await ClockCycles(dut.clk, 50)
    got = bytes(sink.received)
    assert got == expected, f"responses differ from the golden model: got {got.hex()}, expected {expected.hex()}"
    dut._log.info(f"{len(case['frames'])} frames, {len(expected)} response bytes equal the golden model")


def without_timing_counters(responses):
    """Responses as comparable tuples with the engine's stall_in/stall_out counters blanked in READ_COUNTERS
    payloads (they count the host's timing, which the protocol emulator lacks)."""
    from fxtrain.sim.protocol import Status, counter_names

    names = counter_names()
    out = []
    for r in responses:
        payload = r.payload
        if r.cmd == Command.READ_COUNTERS and r.status == Status.OK:
            values = list(struct.unpack(f"<{len(names)}I", payload))
            for name in ("stall_in", "stall_out"):
                values[names.index(name)] = 0
            payload = struct.pack(f"<{len(names)}I", *values)
        out.append((r.cmd, r.seq, r.status, payload, r.crc_ok))
    return out
