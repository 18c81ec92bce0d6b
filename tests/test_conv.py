"""Convolution mode's golden model (``sim/conv.py``): the virtual matrices are the host's im2col, EXPAND's
iterator walk writes exactly their tile-row chunks, and the protocol emulator executes EXPAND by that model."""

import numpy as np
import pytest
import torch

from fxtrain.host.layers import im2col
from fxtrain.sim.conv import (EXPAND_ARGS, ConvGeometry, ConvView, address, conv_matrix, expand_args, expand_cycles,
                              expand_entries, expand_ok, fmap_entries, fmap_pack, fmap_words_per_entry, map_window,
                              window_images)
from fxtrain.sim.gemm import EngineConfig
from fxtrain.sim.input_grad import flip_kernel, gradient_map, input_grad_geometry, input_grad_map
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
    with pytest.raises(ValueError, match="EXPAND row0 must be an integer from 0 to 71, not 72"):
        expand_args(cfg, geom, transposed=False, row0=72, k0=0, count=1, a_base=0, f_base=0)
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


def test_input_gradient_as_a_convolution_equals_patches_folded_by_col2im():
    """For stride-1 convolutions (padding 0 .. kernel-1, 1x1 to 5x5 kernels, C and O not multiples of anything),
    im2col(gradient_map(dY), input_grad_geometry) . flip_kernel(W), read back by input_grad_map, is exactly the
    input gradient: the patch GEMM dY . W folded by col2im, and torch's conv2d input gradient."""
    rng = np.random.default_rng(SEED + 7)
    print("seed", SEED + 7)
    for _ in range(40):
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        o = int(rng.integers(1, 6))
        geom = ConvGeometry(int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(kh, 10)),
                            int(rng.integers(kw, 10)), kh, kw, 1, 1, int(rng.integers(0, kh)),
                            int(rng.integers(0, kw)))
        w = rng.integers(-(1 << 7), 1 << 7, (o, geom.c, kh, kw))
        dy = rng.integers(-(1 << 7), 1 << 7, (geom.positions, o))
        tgeom = input_grad_geometry(geom, o)
        assert (tgeom.out_h, tgeom.out_w, tgeom.c) == (geom.h, geom.w, o), (geom, tgeom)
        dx = input_grad_map(conv_matrix(gradient_map(dy, geom, o), tgeom) @ flip_kernel(w), geom)
        patches = torch.tensor(dy @ w.reshape(o, -1), dtype=torch.float64)
        cols = patches.reshape(geom.n, geom.positions // geom.n, -1).transpose(1, 2)
        folded = torch.nn.functional.fold(cols, (geom.h, geom.w), (kh, kw), padding=(geom.ph, geom.pw))
        assert (dx == folded.numpy()).all(), geom
        ref = torch.nn.grad.conv2d_input((geom.n, geom.c, geom.h, geom.w), torch.tensor(w, dtype=torch.float64),
                                         torch.tensor(gradient_map(dy, geom, o), dtype=torch.float64),
                                         padding=(geom.ph, geom.pw))
        assert (dx == ref.numpy()).all(), geom


def test_input_gradient_convolution_only_for_stride_one_and_padding_below_the_kernel():
    """Strided or over-padded convolutions have no input-gradient convolution (they keep col2im on the host);
    wrong shapes are refused with the shape named."""
    assert input_grad_geometry(ConvGeometry(1, 1, 8, 8, 3, 3, 2, 2, 1, 1), 4) is None
    assert input_grad_geometry(ConvGeometry(1, 1, 8, 8, 3, 3, 1, 1, 3, 0), 4) is None
    assert input_grad_geometry(ConvGeometry(1, 1, 8, 8, 3, 3, 1, 1, 2, 2), 4) == ConvGeometry(1, 4, 10, 10, 3, 3)
    lenet_conv2 = ConvGeometry(64, 6, 12, 12, 5, 5)
    assert input_grad_geometry(lenet_conv2, 16) == ConvGeometry(64, 16, 8, 8, 5, 5, 1, 1, 4, 4)
    geom = ConvGeometry(2, 3, 6, 6, 3, 3)
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        gradient_map(np.zeros((5, 4)), geom, 4)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        flip_kernel(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\(72, 4\)"):
        input_grad_map(np.zeros((72, 4)), geom)


def test_map_window_expands_the_rows_of_the_whole_map_from_any_row():
    """A window of the images that rows r0 .. r1-1 read, EXPANDed from row r0 - n0*OH*OW (not a tile-row
    boundary), writes exactly rows r0 .. of the whole map's matrix; a transposed window is the transposed matrix of
    its images; rows or images outside the map are refused."""
    rng = np.random.default_rng(SEED + 11)
    print("seed", SEED + 11)
    cfg = EngineConfig(rows=5, cols=4, depth=512, b_depth=4096, expander=True)
    for _ in range(30):
        geom, x = _random_case(rng)
        geom = ConvGeometry(int(rng.integers(2, 6)), geom.c, geom.h, geom.w, geom.kh, geom.kw, geom.sh, geom.sw,
                            geom.ph, geom.pw)
        x = rng.integers(-(1 << 15), 1 << 15, (geom.n, geom.c, geom.h, geom.w))
        view = ConvView(x, geom, False, "L", b"d")
        whole = conv_matrix(x, geom)
        r0 = int(rng.integers(0, geom.positions))
        blocks = int(rng.integers(1, 4))
        r1 = min(r0 + blocks * cfg.rows, geom.positions)
        n0, n1 = window_images(geom, r0, r1)
        window = map_window(view, n0, n1)
        assert window.key == ("L", n0, n1) and window.digest == b"d" and window.geom.n == n1 - n0
        b_mem = np.zeros((cfg.b_depth, cfg.cols), dtype=np.int64)
        packed = fmap_pack(cfg, window.x_raw)
        b_mem[7:7 + len(packed)] = packed
        per_image = geom.out_h * geom.out_w
        args = expand_args(cfg, window.geom, transposed=False, row0=r0 - n0 * per_image, k0=0, count=geom.patch,
                           blocks=blocks, a_base=0, f_base=7)
        got = expand_entries(cfg, b_mem, args)
        want = np.zeros((blocks * cfg.rows, geom.patch), dtype=np.int64)
        rows_in_window = min(blocks * cfg.rows, n1 * per_image - r0)
        want[:rows_in_window] = whole[r0:r0 + rows_in_window]
        got_rows = np.concatenate([got[b * geom.patch:(b + 1) * geom.patch].T for b in range(blocks)])
        assert (got_rows[:r1 - r0] == want[:r1 - r0]).all(), (geom, r0, blocks)
    transposed = map_window(ConvView(x, geom, True, "L"), 0, 1)
    assert transposed.transposed and (transposed.matrix() == conv_matrix(x[:1], transposed.geom, True)).all()
    with pytest.raises(ValueError, match=r"Images 0 \.\. 9 are not images"):
        map_window(view, 0, 10)
    with pytest.raises(ValueError, match="are not rows of the"):
        window_images(geom, 0, geom.positions + 1)
