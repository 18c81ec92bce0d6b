"""Random EXPAND cases and request scripts for the RTL checks of convolution mode (``tests/test_expander.py``,
``tests/test_link_cocotb.py``): the Amaranth simulation and the cocotb byte-stall bench feed the same scripts and
compare every response byte with :class:`fxtrain.sim.protocol.ProtocolEmulator`.

Members
-------
random_expand_case(config, rng, f_base=None, geom=None) -> (geom, x, transposed, args)
    A random geometry (strides 1-2, padding 0-2, mostly 1x1 and 3x3 kernels, C = 1-3), map, orientation and
    EXPAND payload (random tile rows, blocks, columns, ``a_base``; ``f_base`` random or given) whose chunks hold
    at least one nonzero map value.
expand_requests(config, rng, seq, f_base=None, geom=None) -> list of frames
    WRITE_B of a map (split where it wraps past the last B entry) and of weights, SET_ROUNDING, EXPAND, RUN over
    all written entries, READ_RESULT, RUN_TILES over the first block, rejected EXPANDs (A range one entry too
    long, a zero kernel size), the RUN again (nothing was written), READ_COUNTERS.
"""

import numpy as np

from ..conv import EXPAND_ARGS, ConvGeometry, conv_matrix, expand_args, fmap_pack
from ..payloads import RUN_ARGS, RUN_CLEAR, RUN_DRAIN, WRITE_HEADER, max_payload, run_tiles_args, value_bytes
from ..protocol import Command, encode_request, pack_values

__all__ = ["random_expand_case", "expand_requests"]


def random_expand_case(config, rng, f_base=None, geom=None):
    while True:                  # a case whose chunks hold at least one map value (not only padding)
        case = _random_case(config, rng, f_base, geom)
        if case[-1]:
            return case[:-1]


def _random_case(config, rng, f_base, geom):
    kh, kw = ((int(rng.choice([1, 3])), int(rng.choice([1, 3]))) if rng.random() < 0.7
              else (int(rng.integers(1, 5)), int(rng.integers(1, 5))))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    ph, pw = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    geom = geom or ConvGeometry(int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(kh, 7)),
                        int(rng.integers(kw, 7)), kh, kw, sh, sw, ph, pw)
    lim = 1 << (config.wl - 1)
    x = rng.integers(-lim, lim, (geom.n, geom.c, geom.h, geom.w))
    if f_base is None:
        f_base = int(rng.integers(0, config.b_depth))
    transposed = bool(rng.integers(0, 2))
    v = conv_matrix(x, geom, transposed)
    mt = -(-v.shape[0] // config.rows)
    tm0 = int(rng.integers(0, mt))
    blocks = int(rng.integers(1, mt - tm0 + 1))
    k0 = int(rng.integers(0, v.shape[1]))
    count = int(rng.integers(1, v.shape[1] - k0 + 1))
    while blocks * count > config.depth:
        count, blocks = max(1, count // 2), max(1, blocks // 2)
    a_base = int(rng.integers(0, config.depth - blocks * count + 1))
    # half the cases start inside a tile row (a map window's first EXPAND, sim.conv.map_window)
    row0 = min(tm0 * config.rows + int(rng.integers(0, config.rows)) * int(rng.integers(0, 2)), v.shape[0] - 1)
    args = expand_args(config, geom, transposed=transposed, row0=row0, k0=k0, count=count,
                       blocks=blocks, a_base=a_base, f_base=f_base)
    vp = np.zeros(((mt + 1) * config.rows, v.shape[1]), dtype=np.int64)
    vp[:v.shape[0]] = v
    nonzero = vp[row0:row0 + blocks * config.rows, k0:k0 + count].any()
    return geom, x, transposed, args, nonzero


def _write_b(config, seq, first, entries):
    """WRITE_B frames of ``entries`` (rows of ``cols`` values) from B entry ``first``, wrapping past the end."""
    vb = value_bytes(config)
    per_frame = (max_payload(0) - WRITE_HEADER.size) // (config.cols * vb)
    frames, i = [], 0
    while i < len(entries):
        addr = (first + i) % config.b_depth
        n = min(per_frame, len(entries) - i, config.b_depth - addr)
        payload = WRITE_HEADER.pack(addr, n) + pack_values(np.asarray(entries[i:i + n]).reshape(-1), vb)
        frames.append(encode_request(Command.WRITE_B, (seq + len(frames)) % 256, payload))
        i += n
    return frames


def expand_requests(config, rng, seq, f_base=None, geom=None):
    """The request script of one random case (module docstring; ``geom`` a given geometry instead of a random
    one); ``rng`` a ``numpy.random.Generator``."""
    geom, x, transposed, args = random_expand_case(config, rng, f_base, geom)
    a = EXPAND_ARGS.unpack(args)
    k = a["blocks"] * a["count"]
    lim = 1 << (config.wl - 1)
    packed = fmap_pack(config, x)
    # the weights right after the map (mod b_depth), or from 0 when that range would pass the last entry
    b_base = (a["f_base"] + len(packed)) % config.b_depth
    if b_base + k > config.b_depth:
        b_base = 0
    weights = rng.integers(-lim, lim, (k, config.cols))
    frames = _write_b(config, seq, b_base, weights)
    frames += _write_b(config, seq + len(frames), a["f_base"], packed)
    shift = int(rng.integers(0, config.wl))
    run = encode_request(Command.RUN, 5, RUN_ARGS.pack(0, a["a_base"], b_base, k, RUN_CLEAR | RUN_DRAIN))
    too_long = dict(a, a_base=config.depth - k + 1)
    zero_kernel = dict(a, kw=0)
    frames += [encode_request(Command.SET_ROUNDING, 1, bytes([shift, int(rng.integers(0, 2))])),
               encode_request(Command.EXPAND, 2, args), run, encode_request(Command.READ_RESULT, 3)]
    if b_base + a["count"] + 1 <= config.b_depth:
        frames.append(encode_request(Command.RUN_TILES, 4, run_tiles_args(a["a_base"], b_base, 1, a["count"], 2)))
    frames += [encode_request(Command.EXPAND, 6, EXPAND_ARGS.pack(*too_long.values())),
               encode_request(Command.EXPAND, 7, EXPAND_ARGS.pack(*zero_kernel.values())),
               run, encode_request(Command.READ_RESULT, 8), encode_request(Command.READ_COUNTERS, 9)]
    return frames
