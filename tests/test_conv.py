"""Convolution mode's golden model (``sim/conv.py``): the virtual matrices are the host's im2col, EXPAND's
iterator walk writes exactly their tile-row chunks, and the protocol emulator executes EXPAND by that model."""

import numpy as np
import pytest
import torch

from fxtrain.host.layers import im2col
from fxtrain.sim.conv import (EXPAND_ARGS, ConvGeometry, address, conv_matrix, expand_args, expand_cycles,
                              expand_entries, expand_ok, fmap_entries, fmap_pack, fmap_words_per_entry)
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.protocol import Command, ProtocolEmulator, ResponseParser, Status, encode_request

SEED = 20261201


def _random_case(rng):
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    ph, pw = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    geom = ConvGeometry(int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(kh, 9)),
                        int(rng.integers(kw, 9)), kh, kw, sh, sw, ph, pw)
    return geom, rng.integers(-(1 << 15), 1 << 15, (geom.n, geom.c, geom.h, geom.w))


def test_conv_matrix_is_the_host_im2col_and_address_names_its_words():
    """conv_matrix equals fxtrain.host.layers.im2col (strides, padding, 1x1 and 3x3 kernels), its transpose is
    the weight-gradient operand, and address() points at the word each element holds (None in the padding)."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    for _ in range(60):
        geom, x = _random_case(rng)
        a = conv_matrix(x, geom)
        ref = im2col(torch.tensor(x, dtype=torch.float64), (geom.kh, geom.kw), (geom.sh, geom.sw),
                     (geom.ph, geom.pw)).numpy()
        assert a.shape == (geom.positions, geom.patch) and (a == ref).all(), geom
        assert (conv_matrix(x, geom, transposed=True) == a.T).all()
        flat = x.reshape(-1)
        for m, p in zip(rng.integers(0, geom.positions, 20), rng.integers(0, geom.patch, 20)):
            w = address(geom, int(m), int(p))
            assert a[m, p] == (0 if w is None else flat[w])


@pytest.mark.parametrize("rows, cols", [(1, 1), (4, 2), (3, 7), (8, 8), (12, 12)])
def test_expand_walk_writes_the_tile_row_chunks(rows, cols):
    """EXPAND's iterator walk (the RTL's order) writes, for every block, the rows x count chunk of the virtual
    matrix at (row0 + b*rows, k0), zeros beyond it, in both orientations, from any f_base; the map is packed P
    words per entry (P the largest power of two <= cols)."""
    seed = SEED + rows * 100 + cols
    rng = np.random.default_rng(seed)
    print("seed", seed)
    cfg = EngineConfig(rows=rows, cols=cols, depth=512, b_depth=4096, expander=True)
    assert fmap_words_per_entry(cfg) == 1 << (cols.bit_length() - 1)
    for _ in range(40):
        geom, x = _random_case(rng)
        b_mem = rng.integers(-99, 99, (cfg.b_depth, cols))          # garbage around the map
        f_base = int(rng.integers(0, 100))
        packed = fmap_pack(cfg, x)
        assert len(packed) == fmap_entries(cfg, geom)
        b_mem[f_base:f_base + len(packed)] = packed
        for transposed in (False, True):
            v = conv_matrix(x, geom, transposed)
            mt = -(-v.shape[0] // rows)
            vp = np.zeros((mt * rows, v.shape[1]), dtype=np.int64)
            vp[:v.shape[0]] = v
            tm0 = int(rng.integers(0, mt))
            blocks = int(rng.integers(1, mt - tm0 + 1))
            k0 = int(rng.integers(0, v.shape[1]))
            count = int(rng.integers(1, v.shape[1] - k0 + 1))
            args = expand_args(cfg, geom, transposed=transposed, row0=tm0 * rows, k0=k0, count=count,
                               blocks=blocks, a_base=0, f_base=f_base)
            assert len(args) == EXPAND_ARGS.size and expand_ok(cfg, args)
            want = np.concatenate([vp[(tm0 + b) * rows:(tm0 + b + 1) * rows, k0:k0 + count].T
                                   for b in range(blocks)])
            assert (expand_entries(cfg, b_mem, args) == want).all(), (geom, transposed)


def test_geometry_and_arguments_are_checked_with_the_bad_value_named():
    """Bad geometry and EXPAND arguments raise ValueError naming the value; the device rule rejects an A range
    beyond the depth."""
    with pytest.raises(ValueError, match="Convolution kh must be an integer from 1 to 255, not 0"):
        ConvGeometry(1, 1, 4, 4, 0, 3)
    with pytest.raises(ValueError, match="smaller than the kernel 5x5"):
        ConvGeometry(1, 1, 4, 4, 5, 5)
    cfg = EngineConfig(rows=4, cols=2, depth=32, b_depth=1024, expander=True)
    geom = ConvGeometry(2, 3, 6, 6, 3, 3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="EXPAND row0 2 is not the first row of a tile row of 4"):
        expand_args(cfg, geom, transposed=False, row0=2, k0=0, count=1, a_base=0, f_base=0)
    with pytest.raises(ValueError, match="EXPAND count must be an integer from 1 to 27, not 28"):
        expand_args(cfg, geom, transposed=False, row0=0, k0=0, count=28, a_base=0, f_base=0)
    assert expand_ok(cfg, expand_args(cfg, geom, transposed=False, row0=0, k0=0, count=8, blocks=4, a_base=0,
                                      f_base=0))
    assert not expand_ok(cfg, expand_args(cfg, geom, transposed=False, row0=0, k0=0, count=8, blocks=4,
                                          a_base=1, f_base=0))
    assert expand_cycles(cfg, 8, 4) == 8 * 4 * 4 + 2


def _exchange(emu, cmd, payload=b""):
    (resp,) = ResponseParser().feed(emu.feed(encode_request(cmd, 7, payload)))
    return resp


def test_emulator_executes_expand_and_a_device_without_expander_does_not_know_it():
    """The protocol emulator's EXPAND writes expand_entries into the A memory (a following RUN equals the
    GEMM of the virtual matrix); BAD_ARGUMENT writes nothing; without an expander EXPAND is UNKNOWN_COMMAND."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    cfg = EngineConfig(rows=4, cols=2, depth=64, b_depth=1024, expander=True)
    geom = ConvGeometry(2, 2, 5, 5, 3, 3, 2, 2, 1, 1)
    x = rng.integers(-1000, 1000, (2, 2, 5, 5))
    emu = ProtocolEmulator(cfg)
    emu.engine.write_b(100, fmap_pack(cfg, x))
    args = expand_args(cfg, geom, transposed=False, row0=4, k0=0, count=geom.patch, blocks=2, a_base=3,
                       f_base=100)
    assert _exchange(emu, Command.EXPAND, args).status == Status.OK
    a = conv_matrix(x, geom)
    assert (emu.engine.a_mem[3:3 + geom.patch] == a[4:8].T).all()
    assert (emu.engine.a_mem[3 + geom.patch:3 + 2 * geom.patch] == a[8:12].T).all()
    before = emu.engine.a_mem.copy()
    bad = expand_args(cfg, geom, transposed=False, row0=0, k0=0, count=geom.patch, blocks=4, a_base=0,
                      f_base=100)
    assert _exchange(emu, Command.EXPAND, bad).status == Status.BAD_ARGUMENT
    assert (emu.engine.a_mem == before).all()
    plain = ProtocolEmulator(EngineConfig(rows=4, cols=2, depth=64, b_depth=1024))
    assert _exchange(plain, Command.EXPAND, args).status == Status.UNKNOWN_COMMAND
