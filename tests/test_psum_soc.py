"""The RTL SoC's RUN with LOAD/SAVE/SLOT answers byte for byte like ProtocolEmulator (sim/protocol.py)."""

import random
import struct

from fxtrain.sim.benches.link_bench import without_timing_counters
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.payloads import RUN_CLEAR, RUN_DRAIN, RUN_LOAD, RUN_SAVE, WRITE_HEADER, run_args
from fxtrain.sim.protocol import Command, ProtocolEmulator, ResponseParser, Status, decode_result, pack_values

from test_protocol import _run_soc


def _psum_requests(config, rng):
    """IDENTIFY, seeds and rounding, then a K-split GEMM of 3 tiles played chunk-outer over slots 2, 0, 1
    (CLEAR/LOAD on the first/later chunks, SAVE/DRAIN on the earlier/last; a K = 1 chunk; saturating
    extremes on tile 0), READ_RESULT after each draining run, the illegal RUNs (LOAD+CLEAR, SAVE+DRAIN, LOAD
    and SAVE with slot = psum_slots, an unknown flag bit) and READ_COUNTERS."""
    wl, rows, cols = config.wl, config.rows, config.cols
    lo, hi = -(1 << (wl - 1)), (1 << (wl - 1)) - 1
    vb = (wl + 7) // 8
    seq = iter(range(1, 256))
    reqs = [encode(Command.IDENTIFY, next(seq)),
            encode(Command.SET_SEEDS, next(seq), struct.pack(f"<{config.lanes}I",
                                                             *[rng.randrange(1, 2**32) for _ in range(config.lanes)])),
            encode(Command.SET_ROUNDING, next(seq), bytes([wl // 2, 1]))]
    chunks = [5, 1, 4]
    slots = [2, 0, 1]
    for c, k in enumerate(chunks):
        flags = (RUN_CLEAR if c == 0 else RUN_LOAD) | (RUN_DRAIN if c == len(chunks) - 1 else RUN_SAVE)
        for t, slot in enumerate(slots):
            pick = (lambda: rng.choice([lo, hi])) if t == 0 else (lambda: rng.randint(lo, hi))
            a = [pick() for _ in range(k * rows)]
            b = [pick() for _ in range(k * cols)]
            a_base, b_base = rng.randint(0, config.depth - k), rng.randint(0, config.b_depth - k)
            reqs += [encode(Command.WRITE_A, next(seq), WRITE_HEADER.pack(a_base, k) + pack_values(a, vb)),
                     encode(Command.WRITE_B, next(seq), WRITE_HEADER.pack(b_base, k) + pack_values(b, vb)),
                     encode(Command.RUN, next(seq), run_args(a_base, b_base, k, flags, slot=slot))]
            if flags & RUN_DRAIN:
                reqs.append(encode(Command.READ_RESULT, next(seq)))
    n = config.psum_slots
    for flags, slot in ((RUN_LOAD | RUN_CLEAR, 0), (RUN_SAVE | RUN_DRAIN, 0), (RUN_LOAD, n), (RUN_SAVE, n),
                        (16 | RUN_CLEAR, 0)):
        reqs.append(encode(Command.RUN, next(seq), run_args(0, 0, 2, flags, slot=slot)))
    reqs.append(encode(Command.READ_COUNTERS, next(seq)))
    return reqs


def encode(command, seq, payload=b""):
    from fxtrain.sim.protocol import encode_request
    return encode_request(command, seq, payload)


def test_rtl_soc_psum_runs_answer_like_the_emulator():
    """Every response of the SoC (IDENTIFY with PSUM_SLOTS, the chunk-outer interleaved tiles' READ_RESULTs,
    BAD_ARGUMENT for each illegal LOAD/SAVE RUN, the counters) equals the emulator's; the results saturate."""
    config = EngineConfig(rows=2, cols=3, wl=8, depth=16, max_k_log2=8, psum_slots=3)
    seed = 41
    print("seed", seed)
    stream = b"".join(_psum_requests(config, random.Random(seed)))
    emu = ProtocolEmulator(config, 12_000_000, 3_000_000, frame_timeout=400)
    exp_r = ResponseParser().feed(emu.feed(stream))
    got_r = ResponseParser().feed(_run_soc(stream, 400, idle_after=100, config=config))
    statuses = [Status(r.status).name for r in exp_r]
    assert statuses.count("BAD_ARGUMENT") == 5 and statuses.count("OK") == len(statuses) - 5
    results = [r for r in exp_r if r.cmd == Command.READ_RESULT]
    assert len(results) == 3 and any((decode_result(config, r.payload)[1] != 0).any() for r in results)
    assert without_timing_counters(got_r) == without_timing_counters(exp_r)
