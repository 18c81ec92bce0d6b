"""Host link protocol: CRC, frames, the golden ProtocolEmulator, and the RTL SoC answering like it.

The RTL checks run the byte-stream ``AcceleratorSoC`` (real ``GemmEngine``) in the Amaranth simulator on a
scripted byte sequence with good and bad frames and compare every response byte with ``ProtocolEmulator``.
"""

import random
import struct
from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator

from fxtrain.rtl.crc import CRC16
from fxtrain.rtl.soc import AcceleratorSoC, identify_payload
from fxtrain.sim.benches.link_bench import run_tiles_requests, without_timing_counters
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.payloads import FEATURE_EXPAND, RUN_ARGS, WRITE_HEADER, decode_tiles, result_bytes, run_tiles_args
from fxtrain.sim.protocol import (LINK_COUNTERS, Command, Identity, ProtocolEmulator, ResponseParser, Status,
                                  counter_names, crc16, decode_result, encode_request, encode_response,
                                  encode_result, pack_values, unpack_values)

# the B memory deeper than A's (and than 512), as on the iCEBreaker: B addresses above A's range are legal
CONFIG = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12, b_depth=1024)


def test_crc16_is_ccitt_false():
    """CRC-16/CCITT-FALSE check value: crc16(b'123456789') == 0x29B1; empty input gives the init 0xFFFF."""
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_rtl_crc_matches_golden_on_random_bytes():
    """rtl.crc.CRC16 absorbs bytes exactly like sim.protocol.crc16 (and restarts on clear)."""
    seed = 5
    rng = random.Random(seed)
    print("seed", seed)
    messages = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(20)]
    messages.append(bytes([0x00, 0xFF, 0xA5, 0x5A]))
    dut = CRC16()

    async def bench(ctx):
        for message in messages:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.en, 1)
            for byte in message:
                ctx.set(dut.data, byte)
                await ctx.tick()
            ctx.set(dut.en, 0)
            assert ctx.get(dut.crc) == crc16(message), message.hex()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_frames_round_trip_and_parser_skips_garbage():
    """Responses survive garbage before them; a corrupted response is returned with crc_ok=False."""
    good = encode_response(Command.IDENTIFY, 7, Status.OK, b"abc")
    bad = bytearray(encode_response(Command.RUN, 8, Status.OK))
    bad[3] ^= 1
    parser = ResponseParser()
    out = parser.feed(b"\x00\x13garbage" + good[:4]) + parser.feed(good[4:] + bytes(bad))
    assert [(r.cmd, r.seq, r.status, r.payload, r.crc_ok) for r in out] == [
        (1, 7, 0, b"abc", True), (6, 8, 1, b"", False)]
    assert parser.skipped == 9
    frame = encode_request(Command.RUN, 3, b"\x01\x02")
    assert frame[:5] == bytes([0xA5, 6, 3, 2, 0]) and crc16(frame[1:-2]) == struct.unpack("<H", frame[-2:])[0]
    with pytest.raises(ValueError, match="Command must be a byte"):
        encode_request(256, 0)


@pytest.mark.parametrize("wl", [4, 8, 12, 16])
def test_value_packing_round_trips_extremes(wl):
    """Raw values of ``wl`` bits, extremes included, pack to ceil(wl/8)-byte fields and back."""
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    values = np.array([lo, hi, 0, -1, 1, lo + 1])
    nbytes = (wl + 7) // 8
    data = pack_values(values, nbytes)
    assert len(data) == nbytes * len(values)
    assert (unpack_values(data, nbytes, wl) == values).all()


def test_result_payload_round_trips():
    rng = np.random.default_rng(3)
    c = rng.integers(-2**15, 2**15, (2, 2))
    sat = np.array([[True, False], [False, True]])
    c2, sat2 = decode_result(CONFIG, encode_result(CONFIG, c, sat))
    assert (c2 == c).all() and (sat2 == sat).all()


def test_identity_round_trip_and_rejects_other_magic():
    """The 40-byte IDENTIFY payload (version 3) carries geometry, both memory depths, clock, baud, timeout, the
    feature bits and the partial-sum slots; foreign payloads and version 2's 32 bytes are refused."""
    ident = identify_payload(CONFIG, 48_000_000, 3_000_000)
    assert len(ident.to_bytes()) == Identity.SIZE == 40 and ident.version == 3
    assert Identity.from_bytes(ident.to_bytes()) == ident
    assert (ident.depth, ident.b_depth) == (32, 1024) and ident.to_bytes()[28:32] == (1024).to_bytes(4, "little")
    assert ident.features == ident.psum_slots == 0 and ident.to_bytes()[32:] == bytes(8)
    with_expander = identify_payload(replace(CONFIG, expander=True, psum_slots=40), 48_000_000, 3_000_000)
    assert with_expander.features == FEATURE_EXPAND and with_expander.config.expander
    assert with_expander.config.psum_slots == 40 and with_expander.to_bytes()[36:] == (40).to_bytes(4, "little")
    with pytest.raises(ValueError, match="40 bytes"):
        Identity.from_bytes(ident.to_bytes()[:32])
    assert ident.config == CONFIG and ident.frame_timeout == 480_000
    assert ident.n_counters == len(counter_names())
    with pytest.raises(ValueError, match="not an fxtrain device"):
        Identity.from_bytes(b"XXXX" + ident.to_bytes()[4:])


def _status(emulator, cmd, payload=b"", seq=1, frame=None):
    responses = ResponseParser().feed(emulator.feed(frame or encode_request(cmd, seq, payload)))
    assert len(responses) == 1
    return Status(responses[0].status)


def test_emulator_answers_every_bad_frame_with_its_error_status():
    """Bad CRC, unknown command, wrong length, bad arguments and a truncated frame each get an error status,
    are counted, and the next good frame succeeds (resynchronisation without reset)."""
    emu = ProtocolEmulator(CONFIG, frame_timeout=100)
    bad_crc = bytearray(encode_request(Command.IDENTIFY, 1))
    bad_crc[-2] ^= 4
    assert _status(emu, None, frame=bytes(bad_crc)) is Status.CRC_ERROR
    assert _status(emu, 0x42) is Status.UNKNOWN_COMMAND
    assert _status(emu, Command.RUN, b"\x00" * 8) is Status.BAD_LENGTH
    assert _status(emu, Command.IDENTIFY, b"\x00") is Status.BAD_LENGTH
    assert _status(emu, Command.WRITE_A, WRITE_HEADER.pack(0, 2) + b"\x00" * 4) is Status.BAD_LENGTH
    assert _status(emu, Command.WRITE_A, WRITE_HEADER.pack(31, 2) + b"\x00" * 8) is Status.BAD_ARGUMENT
    assert _status(emu, Command.RUN, RUN_ARGS.pack(0, 0, 0, 0, 3)) is Status.BAD_ARGUMENT
    assert _status(emu, Command.RUN, RUN_ARGS.pack(0, 1, 0, 32, 3)) is Status.BAD_ARGUMENT       # A: 1 + 32 > 32
    assert _status(emu, Command.RUN, RUN_ARGS.pack(0, 0, 1000, 25, 3)) is Status.BAD_ARGUMENT    # B: 1025 > 1024
    assert _status(emu, Command.WRITE_B, WRITE_HEADER.pack(1023, 2) + b"\x00" * 8) is Status.BAD_ARGUMENT
    assert _status(emu, Command.WRITE_B, WRITE_HEADER.pack(1022, 2) + b"\x00" * 8) is Status.OK
    assert _status(emu, Command.SET_ROUNDING, bytes([33, 0])) is Status.BAD_ARGUMENT
    assert _status(emu, Command.SET_SEEDS, struct.pack("<2I", 5, 0)) is Status.BAD_ARGUMENT
    assert emu.feed(encode_request(Command.IDENTIFY, 9)[:4]) == b""
    assert emu.idle(99) == b""
    timeout = ResponseParser().feed(emu.idle(1))
    assert [(r.cmd, r.seq, r.status) for r in timeout] == [(Command.IDENTIFY, 9, Status.TIMEOUT)]
    assert _status(emu, Command.IDENTIFY) is Status.OK
    assert emu.link_counters == {"frames_ok": 2, "crc_errors": 1, "unknown_commands": 1, "bad_lengths": 3,
                                 "bad_arguments": 7, "timeouts": 1}


def _scripted_requests(rng):
    """Good frames of two tile GEMMs (one K-split) interleaved with every kind of bad frame."""
    lo, hi = -2**15, 2**15 - 1
    seeds = [rng.randrange(1, 2**32) for _ in range(CONFIG.lanes)]
    reqs = [encode_request(Command.IDENTIFY, 1),
            encode_request(Command.SET_SEEDS, 2, struct.pack("<2I", *seeds)),
            encode_request(Command.SET_ROUNDING, 3, bytes([13, 1]))]
    for base in (0, 5):
        a = [rng.randint(lo, hi) for _ in range(10)]
        b = [rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(10)]
        reqs += [encode_request(Command.WRITE_A, 4, WRITE_HEADER.pack(base, 5) + pack_values(a, 2)),
                 encode_request(Command.WRITE_B, 5, WRITE_HEADER.pack(base + 1, 5) + pack_values(b, 2))]
    reqs += [encode_request(Command.RUN, 6, RUN_ARGS.pack(0, 0, 1, 5, 1)),
             encode_request(Command.RUN, 7, RUN_ARGS.pack(0, 5, 6, 5, 2)),
             encode_request(Command.READ_RESULT, 8),
             encode_request(Command.SET_ROUNDING, 9, bytes([0, 0])),
             encode_request(Command.RUN, 10, RUN_ARGS.pack(0, 0, 1, 1, 3)),
             encode_request(Command.READ_RESULT, 11)]
    reqs += run_tiles_requests(CONFIG, rng, 23)
    # B above A's depth (b_depth 1024 > depth 32): write at 1000..1004, runs from there (K = 5, K = 1 at the
    # last A entry), then writes and runs that leave A's or B's range
    b_high = [rng.randint(lo, hi) for _ in range(10)]
    reqs += [encode_request(Command.WRITE_B, 30, WRITE_HEADER.pack(1000, 5) + pack_values(b_high, 2)),
             encode_request(Command.RUN, 31, RUN_ARGS.pack(0, 5, 1000, 5, 3)),
             encode_request(Command.READ_RESULT, 32),
             encode_request(Command.RUN, 33, RUN_ARGS.pack(0, 31, 1004, 1, 3)),
             encode_request(Command.READ_RESULT, 34),
             encode_request(Command.WRITE_B, 35, WRITE_HEADER.pack(1023, 2) + b"\x00" * 8),
             encode_request(Command.WRITE_A, 36, WRITE_HEADER.pack(40, 1) + b"\x00" * 4),
             encode_request(Command.RUN, 37, RUN_ARGS.pack(0, 0, 1020, 5, 3)),
             encode_request(Command.RUN, 38, RUN_ARGS.pack(0, 0, 1000, 33, 3))]
    bad_crc = bytearray(encode_request(Command.RUN, 12, RUN_ARGS.pack(0, 0, 0, 3, 3)))
    bad_crc[7] ^= 0x20
    reqs += [bytes(bad_crc), b"\x00\x13\x37garbage", encode_request(0x33, 13, b"xy"),
             encode_request(Command.RUN, 14, b"abc"), encode_request(Command.WRITE_A, 15, WRITE_HEADER.pack(0, 3)
                                                                    + b"\x00" * 8),
             encode_request(Command.RUN, 16, RUN_ARGS.pack(0, 30, 0, 3, 3)),
             encode_request(Command.SET_SEEDS, 17, struct.pack("<2I", 0, 3)),
             encode_request(Command.READ_RESULT, 18), encode_request(Command.READ_COUNTERS, 19),
             encode_request(Command.SOFT_RESET, 20), encode_request(Command.READ_COUNTERS, 21)]
    return reqs


def test_emulator_run_tiles_equals_runs_and_reads():
    """RUN_TILES answers the tiles that per-tile clear+drain RUN + READ_RESULT exchanges give, in one frame of
    n_tiles x the READ_RESULT layout, and leaves the last tile in the result buffer; bad arguments run nothing."""
    seed = 4
    rng = random.Random(seed)
    print("seed", seed)
    setup = [encode_request(Command.SET_SEEDS, 1, struct.pack("<2I", 7, 9))]
    frames = setup + run_tiles_requests(CONFIG, rng, 2)[:4]
    tiled, single = ProtocolEmulator(CONFIG), ProtocolEmulator(CONFIG)
    answers = ResponseParser().feed(b"".join(tiled.feed(f) for f in frames))
    payload = answers[-1].payload
    assert answers[-1].cmd == Command.RUN_TILES and len(payload) == 3 * result_bytes(CONFIG)
    ResponseParser().feed(b"".join(single.feed(f) for f in frames[:-1]))
    expected = b""
    for t in range(3):
        single.feed(encode_request(Command.RUN, 9, RUN_ARGS.pack(0, 20, 17 + 5 * t, 5, 3)))
        expected += ResponseParser().feed(single.feed(encode_request(Command.READ_RESULT, 10)))[0].payload
    assert payload == expected and len(decode_tiles(CONFIG, payload)) == 3
    assert any(sat.any() for _, sat in decode_tiles(CONFIG, payload))
    last = ResponseParser().feed(tiled.feed(encode_request(Command.READ_RESULT, 11)))[0].payload
    assert last == expected[-result_bytes(CONFIG):]
    runs = tiled.engine.counters["runs"]
    for frame in run_tiles_requests(CONFIG, rng, 20)[7:]:
        assert ResponseParser().feed(tiled.feed(frame))[0].status in (Status.BAD_ARGUMENT, Status.BAD_LENGTH)
    assert tiled.engine.counters["runs"] == runs


def _run_soc(stream, frame_timeout, idle_after, config=CONFIG, stalls=None):
    """Response bytes of the byte-stream SoC fed ``stream``; ``stalls=(rng, p_valid, p_ready)`` (a random.Random
    and the chances that the input is offered / the output is ready in a cycle) stalls both streams at random;
    None: never."""
    soc = AcceleratorSoC(config, 12_000_000, 3_000_000, byte_stream=True, frame_timeout=frame_timeout)
    out = bytearray()

    rng, p_valid, p_ready = stalls or (None, 1.0, 1.0)

    async def bench(ctx):
        i = 0
        idle = 0
        while idle < idle_after:
            offer = i < len(stream) and (p_valid >= 1.0 or rng.random() < p_valid)
            take = p_ready >= 1.0 or rng.random() < p_ready
            ctx.set(soc.tx_bytes.ready, take)
            if offer:
                ctx.set(soc.rx_bytes.payload, stream[i])
            ctx.set(soc.rx_bytes.valid, offer)
            _, _, valid, ready, tx_valid, tx_ready, tx_byte = await ctx.tick().sample(
                soc.rx_bytes.valid, soc.rx_bytes.ready, soc.tx_bytes.valid, soc.tx_bytes.ready, soc.tx_bytes.payload)
            i += bool(valid and ready)
            if tx_valid and tx_ready:
                out.append(tx_byte)
            idle = idle + 1 if i >= len(stream) and not tx_valid else 0

    sim = Simulator(soc)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bytes(out)


def test_rtl_soc_answers_like_the_golden_emulator():
    """Every response byte of the RTL SoC equals ProtocolEmulator's for a GEMM with a K-split, both rounding
    modes, saturating operands and every kind of bad frame, then a truncated frame that must time out."""
    seed = 11
    rng = random.Random(seed)
    print("seed", seed)
    requests = _scripted_requests(rng)
    truncated = encode_request(Command.WRITE_B, 22, WRITE_HEADER.pack(0, 2) + b"\x01" * 8)[:9]
    stream = b"".join(requests) + truncated
    timeout = 200
    emu = ProtocolEmulator(CONFIG, 12_000_000, 3_000_000, frame_timeout=timeout)
    expected = emu.feed(stream) + emu.idle(timeout)
    got = _run_soc(stream, timeout, idle_after=timeout + 50)
    exp_r, got_r = ResponseParser().feed(expected), ResponseParser().feed(got)
    statuses = [Status(r.status).name for r in exp_r]
    print("statuses", statuses)
    assert {"OK", "CRC_ERROR", "UNKNOWN_COMMAND", "BAD_LENGTH", "BAD_ARGUMENT", "TIMEOUT"} <= set(statuses)
    assert without_timing_counters(got_r) == without_timing_counters(exp_r)
    assert len(got) == len(expected)
    assert LINK_COUNTERS[0] == "frames_ok"


def test_rtl_run_tiles_with_random_stalls_answers_like_the_golden_emulator():
    """RUN_TILES (and the rest of the script) with the input's valid and the output's ready dropped at random:
    the SoC's response bytes equal the emulator's, so the tile stream never loses, repeats or invents a byte
    while the engine waits for the link (engine stall counters blanked: they count host timing)."""
    seed = 23
    rng = random.Random(seed)
    print("seed", seed)
    setup = [encode_request(Command.SET_SEEDS, 1, struct.pack("<2I", 7, 9))]
    stream = b"".join(setup + run_tiles_requests(CONFIG, rng, 2) + [encode_request(Command.READ_COUNTERS, 40)])
    emu = ProtocolEmulator(CONFIG, 12_000_000, 3_000_000, frame_timeout=400)
    expected = ResponseParser().feed(emu.feed(stream))
    got = ResponseParser().feed(_run_soc(stream, 400, idle_after=60, stalls=(random.Random(seed), 0.6, 0.15)))
    assert [Status(r.status).name for r in got].count("OK") >= 8
    assert without_timing_counters(got) == without_timing_counters(expected)


@pytest.mark.parametrize("rows, cols, wl", [(1, 1, 8), (3, 9, 12)])
def test_rtl_result_rows_on_odd_geometries_with_output_stalls(rows, cols, wl):
    """READ_RESULT of the RTL SoC equals the emulator's, twice in a row, on geometries whose result rows are
    2 bytes (1 x 1, wl 8: the shortest row the executor's read-ahead row register handles) and 20 bytes with a
    non-power-of-two row count, sign-extended 12-bit values and 2 saturation-flag bytes (3 x 9, wl 12), with
    saturating extremes and the output not ready on random cycles; then a RUN_TILES of 2 tiles (rows streamed
    from the engine through the same row register) and READ_RESULT of its last tile."""
    config = EngineConfig(rows=rows, cols=cols, wl=wl, depth=16, max_k_log2=8)
    seed = 5 + rows
    rng = random.Random(seed)
    print("seed", seed)
    lo, hi = -2**(wl - 1), 2**(wl - 1) - 1
    vb = (wl + 7) // 8
    k = 3
    a = [rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(k * rows)]
    b = [rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(2 * k * cols)]
    seeds = [rng.randrange(1, 2**32) for _ in range(config.lanes)]
    stream = b"".join([
        encode_request(Command.SET_SEEDS, 1, struct.pack(f"<{config.lanes}I", *seeds)),
        encode_request(Command.SET_ROUNDING, 2, bytes([wl // 2, 1])),
        encode_request(Command.WRITE_A, 3, WRITE_HEADER.pack(0, k) + pack_values(a, vb)),
        encode_request(Command.WRITE_B, 4, WRITE_HEADER.pack(4, 2 * k) + pack_values(b, vb)),
        encode_request(Command.RUN, 5, RUN_ARGS.pack(0, 0, 4, k, 3)),
        encode_request(Command.READ_RESULT, 6), encode_request(Command.READ_RESULT, 7),
        encode_request(Command.RUN_TILES, 8, run_tiles_args(0, 4, k, k, 2)),
        encode_request(Command.READ_RESULT, 9)])
    emu = ProtocolEmulator(config, 12_000_000, 3_000_000, frame_timeout=400)
    exp_r = ResponseParser().feed(emu.feed(stream))
    got_r = ResponseParser().feed(_run_soc(stream, 400, idle_after=100, config=config, stalls=(rng, 1.0, 0.5)))
    assert [Status(r.status).name for r in exp_r] == ["OK"] * 9
    assert len(exp_r[-2].payload) == 2 * len(exp_r[-1].payload)
    values, flags = decode_result(config, exp_r[-3].payload)
    assert (np.asarray(flags) != 0).any() and (np.asarray(flags) == 0).any() or rows * cols == 1
    assert without_timing_counters(got_r) == without_timing_counters(exp_r)


def test_fast_crc_equals_bytewise_definition():
    """crc16 (binascii.crc_hqx) equals the byte-wise table definition crc16_update on random data."""
    from fxtrain.sim.protocol import crc16_update
    rng = random.Random(9)
    for _ in range(50):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        crc = 0xFFFF
        for byte in data:
            crc = crc16_update(crc, byte)
        assert crc16(data) == crc


def test_emulator_bulk_writes_equal_byte_by_byte_feeding():
    """Feeding a WRITE frame whole (bulk path) or one byte at a time gives the same memory and responses."""
    rng = np.random.default_rng(2)
    frames = [encode_request(Command.WRITE_A, 1, WRITE_HEADER.pack(3, 7) + pack_values(rng.integers(-9, 9, 14), 2)),
              encode_request(Command.WRITE_B, 2, WRITE_HEADER.pack(30, 3) + pack_values(rng.integers(-9, 9, 6), 2))]
    whole, split = ProtocolEmulator(CONFIG), ProtocolEmulator(CONFIG)
    out_whole = whole.feed(b"".join(frames))
    out_split = b"".join(split.feed(bytes([x])) for x in b"".join(frames))
    assert out_whole == out_split
    assert (whole.engine.a_mem == split.engine.a_mem).all() and (whole.engine.b_mem == split.engine.b_mem).all()
    assert whole.engine.a_mem[3:10].any()


def _timing(frame):
    soc = AcceleratorSoC(CONFIG, 12_000_000, 3_000_000, byte_stream=True, frame_timeout=300)
    taken, emitted = [], []

    async def bench(ctx):
        ctx.set(soc.tx_bytes.ready, 1)
        i = 0
        for cycle in range(80):
            if i < len(frame):
                ctx.set(soc.rx_bytes.payload, frame[i])
            ctx.set(soc.rx_bytes.valid, i < len(frame))
            _, _, valid, ready, tx_valid = await ctx.tick().sample(soc.rx_bytes.valid, soc.rx_bytes.ready,
                                                                    soc.tx_bytes.valid)
            if valid and ready:
                taken.append(cycle)
                i += 1
            if tx_valid:
                emitted.append(cycle)

    sim = Simulator(soc)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return taken, emitted


def test_rtl_response_latency():
    """The latencies stated in CommandExecutor's docstring: IDENTIFY's first response byte 5 cycles after its
    last request byte, a header-rejected frame's 4 cycles after its LEN byte, responses at 1 byte/cycle."""
    taken, emitted = _timing(encode_request(Command.IDENTIFY, 1))
    assert taken == list(range(7))
    assert emitted == list(range(taken[-1] + 5, taken[-1] + 5 + 6 + Identity.SIZE + 2))
    taken, emitted = _timing(encode_request(0x33, 2, b"ab"))
    assert emitted[0] == taken[4] + 4 and len(emitted) == 8


@pytest.mark.slow
def test_rtl_link_counters_carry_across_bytes():
    """The link counters (byte-serial increments in the executor's link memory) carry from byte 0 into byte 1
    like the emulator's u32 counters: over 256 UNKNOWN_COMMAND and over 256 BAD_LENGTH answers, READ_COUNTERS,
    a SOFT_RESET, READ_COUNTERS again."""
    stream = b"".join(encode_request(0x33, i % 256) for i in range(300))
    stream += b"".join(encode_request(Command.IDENTIFY, i % 256, b"x") for i in range(260))
    stream += (encode_request(Command.READ_COUNTERS, 1) + encode_request(Command.SOFT_RESET, 2)
               + encode_request(Command.READ_COUNTERS, 3))
    timeout = 200
    emu = ProtocolEmulator(CONFIG, 12_000_000, 3_000_000, frame_timeout=timeout)
    expected = emu.feed(stream)
    got = _run_soc(stream, timeout, idle_after=50)
    exp_r, got_r = ResponseParser().feed(expected), ResponseParser().feed(got)
    counters = dict(zip(counter_names(), struct.unpack("<12I", exp_r[-3].payload)))
    assert counters["unknown_commands"] >= 256 and counters["bad_lengths"] >= 256   # (a rejected frame's CRC
    assert counters["frames_ok"] == 1                                                 # bytes may start a frame)
    assert without_timing_counters(got_r) == without_timing_counters(exp_r)


def test_rtl_set_rounding_right_before_and_after_each_run():
    """SET_ROUNDING immediately followed by RUN (the engine latches shift/mode at accept and its rounders decode
    them a cycle ahead), and again right after the RUN, before its READ_RESULT: every tile is rounded with the
    parameters set before its RUN, not the later ones, by the RTL SoC exactly as by the emulator; shift and mode
    change at every run (0, 32 and neighbouring shifts)."""
    seed = 61
    rng = random.Random(seed)
    print("seed", seed)
    lo, hi = -2**15, 2**15 - 1
    seeds = [rng.randrange(1, 2**32) for _ in range(CONFIG.lanes)]
    a = [rng.randint(lo, hi) for _ in range(4)]
    b = [rng.randint(lo, hi) for _ in range(4)]
    reqs = [encode_request(Command.SET_SEEDS, 1, struct.pack("<2I", *seeds)),
            encode_request(Command.WRITE_A, 2, WRITE_HEADER.pack(0, 2) + pack_values(a, 2)),
            encode_request(Command.WRITE_B, 3, WRITE_HEADER.pack(0, 2) + pack_values(b, 2))]
    params = [(0, 0), (32, 1), (16, 1), (17, 0), (24, 1), (25, 0), (20, 0)]
    for i, (shift, mode) in enumerate(params):
        after = params[(i + 1) % len(params)]
        reqs += [encode_request(Command.SET_ROUNDING, 4, bytes([shift, mode])),
                 encode_request(Command.RUN, 5, RUN_ARGS.pack(0, 0, 0, 1 + i % 2, 3)),
                 encode_request(Command.SET_ROUNDING, 6, bytes(after)),
                 encode_request(Command.READ_RESULT, 7)]
    stream = b"".join(reqs)
    emu = ProtocolEmulator(CONFIG, 12_000_000, 3_000_000, frame_timeout=400)
    exp_r = ResponseParser().feed(emu.feed(stream))
    got_r = ResponseParser().feed(_run_soc(stream, 400, idle_after=60))
    assert [Status(r.status).name for r in exp_r] == ["OK"] * len(reqs)
    tiles = [r.payload for r in exp_r if r.cmd == Command.READ_RESULT]
    assert len(set(tiles)) == len(params)        # each parameter pair gives another tile: the test can tell
    assert without_timing_counters(got_r) == without_timing_counters(exp_r)
