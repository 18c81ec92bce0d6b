"""Convolution mode: the A operand of a convolution's GEMMs generated on the device from a resident feature map
(``docs/numerics.md`` §7, ``docs/protocol.md`` §4.10 EXPAND). Written once; the protocol emulator
(:mod:`.protocol`), the RTL expander (``rtl/expander.py``), the planner (:mod:`.planner`), the host driver and
the time model import it.

Convolution mode is a *transport*: it changes which bytes cross the link, never a result. The A matrix the device
builds is exactly the one the host would have sent, so every GEMM result is bit for bit that of
:func:`.gemm.tiled_gemm` on the host-built matrix (same tiles, same lanes, same rounding).

The virtual A matrices (:class:`ConvGeometry` ``g``, input ``X`` of shape ``(N, C, H, W)``)
-------------------------------------------------------------------------------------------
* ``im2col`` (``transposed=False``, the forward GEMM ``im2col(X) · Wᵀ``): ``M = N·OH·OW`` rows, row
  ``m = (n·OH + oy)·OW + ox``; ``KC = C·KH·KW`` columns, column ``p = (c·KH + ky)·KW + kx``;
  ``A[m, p] = X[n, c, oy·SH − PH + ky, ox·SW − PW + kx]``, and 0 where that position lies in the zero padding.
  This is ``fxtrain.host.layers.im2col`` (and ``F.unfold``) exactly.
* ``im2col`` transposed (``transposed=True``, the weight-gradient GEMM ``im2col(X)ᵀ · dY``): ``KC`` rows, ``M``
  columns, ``Aᵀ[p, m] = A[m, p]``.
:func:`conv_matrix` is that definition; :func:`address` is the word address it reads.

Feature map in the B memory
---------------------------
The host writes ``X`` (raw integers, C order ``n, c, y, x``) with WRITE_B into consecutive B entries from
``f_base``, **P words per entry** in lanes ``0 .. P−1`` (:func:`fmap_words_per_entry`: the largest power of two
``<= cols``, so the entry/lane split of a word address is a shift and a mask; lanes ``P .. cols−1`` are 0).
Word ``w`` of the map is lane ``w mod P`` of entry ``f_base + ⌊w / P⌋`` (mod ``b_depth``). :func:`fmap_pack`.

EXPAND (what the device computes)
---------------------------------
EXPAND writes ``blocks · count`` A entries from ``a_base``: block ``b``, entry ``i`` (A address
``a_base + b·count + i``) holds, in row ``r``, the value of virtual row ``row0 + b·rows + r`` and virtual column
``k0 + i`` (0 for a row or column beyond the matrix): ``blocks`` consecutive tile rows' A chunks of ``count``
entries. The device does not divide or multiply: it walks two *iterators*, the output-position iterator ``M``
(``n, oy, ox``, with ``yb = oy·SH − PH``, ``xb = ox·SW − PW`` and the word offset
``mw = n·C·H·W + yb·W + xb``) and the patch iterator ``P`` (``c, ky, kx`` with ``pw = c·H·W + ky·W + kx``),
from start states and step constants the host computes (:func:`expand_args`). The value at states ``(M, P)`` is
word ``mw + pw`` of the map when ``n < N``, ``c < C``, ``0 <= yb + ky < H`` and ``0 <= xb + kx < W``, else 0.
In the forward orientation the rows step ``M`` and the entries step ``P``; transposed, the other way round.
Order (:func:`expand_entries`, the bit-exact model of the RTL walk): for each block, for each entry, for each
row: read the value, then step the row iterator; after the last row of an entry the row iterator returns to
the block's start state, except after the last entry of a block, where it keeps the stepped state (the next
block's first row) and the column iterator returns to its start state; the column iterator steps after each
entry otherwise.

Iterator steps (``step_m``/``step_p``)::

    M: ox+1 < OW : ox += 1;                  xb += SW;  mw += SW
       oy+1 < OH : ox = 0; oy += 1;          xb = −PW; yb += SH;  mw += m_row_step
       else      : ox = 0; oy = 0; n += 1;   xb = −PW; yb = −PH;  mw += m_img_step
    P: kx+1 < KW : kx += 1;                  pw += 1
       ky+1 < KH : kx = 0; ky += 1;          pw += p_row_step
       else      : kx = 0; ky = 0; c += 1;   pw += p_chan_step

    m_row_step  = SH·W − (OW−1)·SW             m_img_step  = C·H·W − (OH−1)·SH·W − (OW−1)·SW
    p_row_step  = W − (KW−1)                   p_chan_step = H·W − (KH−1)·W − (KW−1)

Cycles (the RTL's contract, ``tests/test_protocol.py``): :func:`expand_cycles`.

Map windows
-----------
A map that does not fit the B memory next to the GEMM's B blocks can still feed the forward orientation one
*window* at a time (:func:`window_images`, :func:`map_window`): the rows ``r0 .. r1 − 1`` of ``im2col(X)`` read
only images ``⌊r0 / (OH·OW)⌋ .. ⌈r1 / (OH·OW)⌉ − 1``, so the host writes those images as a map of their own (the
geometry with ``n`` = their count) and EXPANDs from row ``r0 − n0·OH·OW`` of it: the same A entries, so no bit
changes. Windows of consecutive EXPANDs may share an image at their border, which is then written twice. The
transposed orientation windows its columns the same way (a K chunk of the weight-gradient GEMM: its positions'
images).

The input gradient of a convolution as a convolution of ``dY`` (``docs/numerics.md`` §7.1) is
:mod:`.input_grad`.

Members
-------
ConvGeometry
    A convolution's shapes, validated (``out_h``, ``out_w``, ``positions`` = M, ``patch`` = KC, ``words``).
conv_matrix(x, geom, transposed=False)
    The virtual A matrix (numpy, int64).
address(geom, m, p)
    Word address of ``A[m, p]`` in the map, or ``None`` in the padding.
fmap_words_per_entry, fmap_entries, fmap_pack
    The feature map's B-memory layout.
EXPAND_ARGS, EXPAND_TRANSPOSED
    EXPAND's payload and its flag bit.
expand_args(config, geom, *, transposed, row0, k0, count, blocks, a_base, f_base) -> bytes
    The EXPAND payload for virtual rows from ``row0`` and columns from ``k0``.
expand_ok(config, args) -> bool
    The device's argument rule (else BAD_ARGUMENT).
expand_entries(config, b_mem, args) -> (blocks·count, rows) int64
    What EXPAND writes, from the B memory's entries (the RTL walk, bit for bit).
expand_cycles(config, count, blocks)
    Executor cycles of one EXPAND.
ConvView
    An A operand given as a feature map and a geometry (what the layers pass to ``backend.gemm``).
window_images(geom, row0, row1) -> (n0, n1); map_window(view, n0, n1) -> ConvView
    The images that output positions ``row0 .. row1 − 1`` read, and the view of just those images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["ConvGeometry", "conv_matrix", "address", "fmap_words_per_entry", "fmap_entries", "fmap_pack",
           "EXPAND_ARGS", "EXPAND_TRANSPOSED", "EXPAND_LATENCY", "expand_args", "expand_ok", "expand_entries",
           "expand_cycles", "ConvView", "window_images", "map_window"]

# field limits of EXPAND_ARGS (16-bit sizes, 8-bit kernel/stride/padding)
_LIMITS = {"n": 0xFFFF, "c": 0xFFFF, "h": 0x7FFF, "w": 0x7FFF, "kh": 0xFF, "kw": 0xFF, "sh": 0xFF, "sw": 0xFF,
           "ph": 0xFF, "pw": 0xFF}


@dataclass(frozen=True)
class ConvGeometry:
    """Shapes of a 2-D convolution: input ``(n, c, h, w)``, kernel ``kh x kw``, stride ``(sh, sw)``, zero padding
    ``(ph, pw)`` (dilation 1, one group). Every value is checked against EXPAND's field widths; a bad one raises
    ``ValueError`` naming it."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    ph: int = 0
    pw: int = 0

    def __post_init__(self):
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            low = 0 if name in ("ph", "pw") else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= limit:
                raise ValueError(f"Convolution {name} must be an integer from {low} to {limit}, not {value!r}")
            object.__setattr__(self, name, int(value))
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"Convolution input {self.h}x{self.w} with padding ({self.ph}, {self.pw}) is smaller "
                             f"than the kernel {self.kh}x{self.kw}")
        if self.words >= 1 << 31:
            raise ValueError(f"Feature map of {self.words} words exceeds EXPAND's 31-bit word offsets")

    @property
    def out_h(self):
        return (self.h + 2 * self.ph - self.kh) // self.sh + 1

    @property
    def out_w(self):
        return (self.w + 2 * self.pw - self.kw) // self.sw + 1

    @property
    def positions(self):
        """M = N·OH·OW (rows of the forward GEMM)."""
        return self.n * self.out_h * self.out_w

    @property
    def patch(self):
        """KC = C·KH·KW (columns of the forward GEMM)."""
        return self.c * self.kh * self.kw

    @property
    def words(self):
        return self.n * self.c * self.h * self.w

    @classmethod
    def of(cls, shape, kernel_size, stride=(1, 1), padding=(0, 0)):
        """From an ``(N, C, H, W)`` shape and ``nn.Conv2d``-style pairs."""
        n, c, h, w = (int(s) for s in shape)
        return cls(n, c, h, w, *kernel_size, *stride, *padding)


def conv_matrix(x, geom, transposed=False):
    """The virtual A matrix of ``x`` (``(N, C, H, W)`` integers): ``im2col`` (M x KC), or its transpose."""
    x = np.asarray(x, dtype=np.int64)
    if x.shape != (geom.n, geom.c, geom.h, geom.w):
        raise ValueError(f"Feature map shape {x.shape} does not match the geometry "
                         f"{(geom.n, geom.c, geom.h, geom.w)}")
    xp = np.pad(x, ((0, 0), (0, 0), (geom.ph, geom.ph), (geom.pw, geom.pw)))
    oh, ow = geom.out_h, geom.out_w
    a = np.empty((geom.n, oh, ow, geom.c, geom.kh, geom.kw), dtype=np.int64)
    for ky in range(geom.kh):
        for kx in range(geom.kw):
            patch = xp[:, :, ky:ky + geom.sh * (oh - 1) + 1:geom.sh, kx:kx + geom.sw * (ow - 1) + 1:geom.sw]
            a[:, :, :, :, ky, kx] = patch.transpose(0, 2, 3, 1)
    a = a.reshape(geom.positions, geom.patch)
    return a.T.copy() if transposed else a


def address(geom, m, p):
    """Word address in the feature map of ``A[m, p]`` (forward orientation), ``None`` in the zero padding."""
    if not (0 <= m < geom.positions and 0 <= p < geom.patch):
        raise ValueError(f"Element ({m}, {p}) lies outside the {geom.positions} x {geom.patch} matrix")
    n, rest = divmod(m, geom.out_h * geom.out_w)
    oy, ox = divmod(rest, geom.out_w)
    c, rest = divmod(p, geom.kh * geom.kw)
    ky, kx = divmod(rest, geom.kw)
    y, x = oy * geom.sh - geom.ph + ky, ox * geom.sw - geom.pw + kx
    if not (0 <= y < geom.h and 0 <= x < geom.w):
        return None
    return ((n * geom.c + c) * geom.h + y) * geom.w + x


def fmap_words_per_entry(config):
    """P: feature-map words per B entry, the largest power of two ``<= cols``."""
    return 1 << (config.cols.bit_length() - 1)


def fmap_entries(config, geom):
    """B entries a feature map of ``geom`` occupies: ``ceil(words / P)``."""
    p = fmap_words_per_entry(config)
    return -(-geom.words // p)


def fmap_pack(config, x):
    """The B entries (``fmap_entries x cols`` int64) that hold feature map ``x``: P words per entry, rest 0."""
    flat = np.asarray(x, dtype=np.int64).reshape(-1)
    p = fmap_words_per_entry(config)
    entries = np.zeros((-(-len(flat) // p), config.cols), dtype=np.int64)
    padded = np.zeros(entries.shape[0] * p, dtype=np.int64)
    padded[:len(flat)] = flat
    entries[:, :p] = padded.reshape(-1, p)
    return entries


def _fields():
    from .payloads import FieldLayout

    return FieldLayout("EXPAND arguments", [
        ("a_base", 2), ("f_base", 2), ("count", 2), ("blocks", 2), ("flags", 1),
        ("n", 2), ("c", 2), ("h", 2), ("w", 2), ("oh", 2), ("ow", 2),
        ("kh", 1), ("kw", 1), ("sh", 1), ("sw", 1), ("ph", 1), ("pw", 1),
        ("m_n", 2), ("m_oy", 2), ("m_ox", 2), ("m_yb", 2), ("m_xb", 2), ("m_word", 4),
        ("p_c", 2), ("p_ky", 1), ("p_kx", 1), ("p_word", 4),
        ("m_row_step", 4), ("m_img_step", 4), ("p_row_step", 2), ("p_chan_step", 4)])


#: EXPAND's payload (``docs/protocol.md`` §4.10). Signed fields (``m_yb``, ``m_xb``, ``m_word`` and the steps)
#: are two's complement in their width.
EXPAND_ARGS = _fields()
#: FLAGS bit 0: the transposed orientation (rows step the patch iterator).
EXPAND_TRANSPOSED = 1
#: Executor cycles of an EXPAND beyond one per value (the B memory's read latency and the last A write).
EXPAND_LATENCY = 2

_SIGNED = {"m_yb": 16, "m_xb": 16, "m_word": 32, "m_row_step": 32, "m_img_step": 32, "p_row_step": 16,
           "p_chan_step": 32}


def _to_field(name, value):
    bits = _SIGNED.get(name)
    return value & ((1 << bits) - 1) if bits else value


def _from_field(name, value):
    bits = _SIGNED.get(name)
    if bits and value >> (bits - 1):
        return value - (1 << bits)
    return value


def _steps(geom):
    g = geom
    return {"m_row_step": g.sh * g.w - (g.out_w - 1) * g.sw,
            "m_img_step": g.c * g.h * g.w - (g.out_h - 1) * g.sh * g.w - (g.out_w - 1) * g.sw,
            "p_row_step": g.w - (g.kw - 1),
            "p_chan_step": g.h * g.w - (g.kh - 1) * g.w - (g.kw - 1)}


def _m_state(geom, m):
    n, rest = divmod(m, geom.out_h * geom.out_w)
    oy, ox = divmod(rest, geom.out_w)
    yb, xb = oy * geom.sh - geom.ph, ox * geom.sw - geom.pw
    return {"m_n": n, "m_oy": oy, "m_ox": ox, "m_yb": yb, "m_xb": xb,
            "m_word": n * geom.c * geom.h * geom.w + yb * geom.w + xb}


def _p_state(geom, p):
    c, rest = divmod(p, geom.kh * geom.kw)
    ky, kx = divmod(rest, geom.kw)
    return {"p_c": c, "p_ky": ky, "p_kx": kx, "p_word": c * geom.h * geom.w + ky * geom.w + kx}


def expand_args(config, geom, *, transposed, row0, k0, count, blocks=1, a_base, f_base):
    """The EXPAND payload that writes ``blocks`` A chunks of ``count`` entries at ``a_base`` for virtual rows
    ``row0 + b·rows ..`` and columns ``k0 .. k0 + count − 1`` of ``conv_matrix(x, geom, transposed)``, the map
    at B entry ``f_base``. ``row0`` may be any row (the walk starts from its iterator state): a map window's
    first tile row starts inside it (:func:`map_window`)."""
    rows_total, cols_total = (geom.patch, geom.positions) if transposed else (geom.positions, geom.patch)
    for name, value, hi in (("row0", row0, rows_total - 1), ("k0", k0, cols_total - 1),
                            ("count", count, cols_total - k0), ("blocks", blocks, 0xFFFF)):
        low = 1 if name in ("count", "blocks") else 0
        if not isinstance(value, (int, np.integer)) or not low <= value <= hi:
            raise ValueError(f"EXPAND {name} must be an integer from {low} to {hi}, not {value!r}")
    m, p = (k0, row0) if transposed else (row0, k0)
    fields = dict(a_base=a_base, f_base=f_base, count=count, blocks=blocks,
                  flags=EXPAND_TRANSPOSED if transposed else 0, n=geom.n, c=geom.c, h=geom.h, w=geom.w,
                  oh=geom.out_h, ow=geom.out_w, kh=geom.kh, kw=geom.kw, sh=geom.sh, sw=geom.sw, ph=geom.ph,
                  pw=geom.pw, **_m_state(geom, m), **_p_state(geom, p), **_steps(geom))
    return EXPAND_ARGS.pack(*(_to_field(f, fields[f]) for f, _ in EXPAND_ARGS.fields))


def _unpack(args):
    raw = EXPAND_ARGS.unpack(args)
    return {f: _from_field(f, v) for f, v in raw.items()}


def expand_ok(config, args):
    """EXPAND's argument rule (else the device answers BAD_ARGUMENT and writes nothing): ``count >= 1``,
    ``blocks >= 1``, ``a_base + blocks·count <= depth``, ``f_base < b_depth``, and no zero size, kernel or
    stride field."""
    a = EXPAND_ARGS.unpack(args)
    sizes = all(a[f] >= 1 for f in ("n", "c", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw"))
    return (a["count"] >= 1 and a["blocks"] >= 1 and a["a_base"] + a["blocks"] * a["count"] <= config.depth
            and a["f_base"] < config.b_depth and sizes)


class _Iter:
    """One of the two iterators (module docstring), as registers: ``state`` dict, ``step()``."""

    def __init__(self, a, kind):
        self.a, self.kind = a, kind
        keys = ("m_n", "m_oy", "m_ox", "m_yb", "m_xb", "m_word") if kind == "M" else ("p_c", "p_ky", "p_kx", "p_word")
        self.state = {k: a[k] for k in keys}

    def step(self):
        a, s = self.a, self.state
        if self.kind == "M":
            if s["m_ox"] + 1 < a["ow"]:
                s.update(m_ox=s["m_ox"] + 1, m_xb=s["m_xb"] + a["sw"], m_word=s["m_word"] + a["sw"])
            elif s["m_oy"] + 1 < a["oh"]:
                s.update(m_ox=0, m_oy=s["m_oy"] + 1, m_xb=-a["pw"], m_yb=s["m_yb"] + a["sh"],
                         m_word=s["m_word"] + a["m_row_step"])
            else:
                s.update(m_ox=0, m_oy=0, m_n=s["m_n"] + 1, m_xb=-a["pw"], m_yb=-a["ph"],
                         m_word=s["m_word"] + a["m_img_step"])
        else:
            if s["p_kx"] + 1 < a["kw"]:
                s.update(p_kx=s["p_kx"] + 1, p_word=s["p_word"] + 1)
            elif s["p_ky"] + 1 < a["kh"]:
                s.update(p_kx=0, p_ky=s["p_ky"] + 1, p_word=s["p_word"] + a["p_row_step"])
            else:
                s.update(p_kx=0, p_ky=0, p_c=s["p_c"] + 1, p_word=s["p_word"] + a["p_chan_step"])


def _value(config, b_mem, a, ms, ps):
    y, x = ms["m_yb"] + ps["p_ky"], ms["m_xb"] + ps["p_kx"]
    if not (ms["m_n"] < a["n"] and ps["p_c"] < a["c"] and 0 <= y < a["h"] and 0 <= x < a["w"]):
        return 0
    word = (ms["m_word"] + ps["p_word"]) & 0xFFFFFFFF
    shift = fmap_words_per_entry(config).bit_length() - 1
    entry = (a["f_base"] + (word >> shift)) % config.b_depth
    return int(b_mem[entry][word & ((1 << shift) - 1)])


def expand_entries(config, b_mem, args):
    """The ``blocks·count`` A entries (``(blocks·count, rows)`` int64) EXPAND ``args`` writes, reading the map
    from ``b_mem`` (the B memory's entries, ``b_depth x cols``), walking the iterators in the RTL's order."""
    a = _unpack(args)
    rows_kind, cols_kind = ("P", "M") if a["flags"] & EXPAND_TRANSPOSED else ("M", "P")
    row_it, col_it = _Iter(a, rows_kind), _Iter(a, cols_kind)
    col_start = dict(col_it.state)
    out = np.zeros((a["blocks"] * a["count"], config.rows), dtype=np.int64)
    for b in range(a["blocks"]):
        block_start = dict(row_it.state)
        for i in range(a["count"]):
            for r in range(config.rows):
                ms, ps = (row_it.state, col_it.state) if rows_kind == "M" else (col_it.state, row_it.state)
                out[b * a["count"] + i, r] = _value(config, b_mem, a, ms, ps)
                row_it.step()
            if i + 1 < a["count"]:
                row_it.state = dict(block_start)
                col_it.step()
        col_it.state = dict(col_start)
    return out


def expand_cycles(config, count, blocks=1):
    """Executor cycles of one EXPAND: one per value (``blocks · count · rows``) plus :data:`EXPAND_LATENCY`."""
    return blocks * count * config.rows + EXPAND_LATENCY


@dataclass(frozen=True, eq=False)
class ConvView:
    """An A operand given as ``conv_matrix(x_raw, geom, transposed)``: what a convolution layer passes to
    ``backend.gemm`` beside the materialized matrix, so that a device with an expander can send ``x_raw`` once
    instead of the matrix. ``key`` names the map for residency (the same map serves the forward and the
    weight-gradient GEMM); ``digest`` is a content digest (the planner re-sends a map whose digest changed)."""

    x_raw: np.ndarray
    geom: ConvGeometry
    transposed: bool
    key: object
    digest: bytes = field(default=b"")

    @property
    def shape(self):
        g = self.geom
        return (g.patch, g.positions) if self.transposed else (g.positions, g.patch)

    def matrix(self):
        return conv_matrix(self.x_raw, self.geom, self.transposed)



def window_images(geom, row0, row1):
    """``(n0, n1)``: the images ``n0 .. n1 − 1`` that output positions ``row0 .. row1 − 1`` read (rows of
    ``im2col``, columns of its transpose)."""
    if not 0 <= row0 < row1 <= geom.positions:
        raise ValueError(f"Rows {row0} .. {row1 - 1} are not rows of the {geom.positions}-row matrix")
    per_image = geom.out_h * geom.out_w
    return row0 // per_image, -(-row1 // per_image)


def map_window(view, n0, n1):
    """The :class:`ConvView` of images ``n0 .. n1 − 1`` of ``view``, in its orientation: its map holds just those
    images (``x_raw[n0:n1]``, None when ``view`` has none), its key is ``(view.key, n0, n1)`` with the same digest
    (the whole map's), and its output position ``m`` (a row of the forward matrix, a column of the transposed
    one) is position ``m + n0·OH·OW`` of ``view``'s matrix."""
    g = view.geom
    if not 0 <= n0 < n1 <= g.n:
        raise ValueError(f"Images {n0} .. {n1 - 1} are not images of the {g.n}-image map")
    x_raw = None if view.x_raw is None else view.x_raw[n0:n1]
    return ConvView(x_raw, replace(g, n=n1 - n0), view.transposed, (view.key, n0, n1), view.digest)
