"""Reader and writer of the IDX files of MNIST and Fashion-MNIST (gzipped or not).

An IDX file is a big-endian header — two zero bytes, a type code, the number of dimensions ``d`` — then ``d``
unsigned 32-bit sizes, then the data in C order. fxtrain only needs type ``0x08`` (unsigned bytes): images are
``N x 28 x 28`` (``d = 3``), labels ``N`` (``d = 1``).

Members
-------
IdxError
    A malformed file; the message names the path and the problem (a ``ValueError``).
read_idx
    The array stored in a file (``.gz`` is decompressed by its magic bytes, whatever the name).
write_idx
    Write a uint8 array, gzipped when the name ends in ``.gz``.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["IdxError", "read_idx", "write_idx"]

_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IdxError(ValueError):
    """A file that is not a valid IDX file."""


def read_idx(path) -> np.ndarray:
    """The array in the IDX file ``path`` (native byte order).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (message names it).
    IdxError
        If the file is not valid gzip or IDX, or its size does not match its header (message names path and
        problem).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise IdxError(f"{path}: corrupt gzip data ({error})") from None
    if len(data) < 4:
        raise IdxError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _TYPES:
        raise IdxError(f"{path}: not an IDX file (magic bytes {data[:4].hex()}, expected 0000 then a type code "
                       f"of {', '.join(f'{t:02x}' for t in _TYPES)} and a dimension count)")
    if ndim < 1:
        raise IdxError(f"{path}: IDX header declares {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated header ({len(data)} bytes, {header} needed for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxError(f"{path}: header says shape {shape} ({expected} data bytes) but the file holds "
                       f"{len(data) - header} data bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> None:
    """Write a uint8 array as IDX (gzip-compressed, level 9, when ``path`` ends in ``.gz``)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 arrays only, not {array.dtype}")
    if array.ndim < 1:
        raise ValueError("write_idx needs an array of at least one dimension")
    payload = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape) + array.tobytes()
    path = os.fspath(path)
    if path.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
