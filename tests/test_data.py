"""IDX reading/writing, data directories, the embedded subset and the deterministic split (fxtrain.host.datasets)."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fxtrain.host.datasets import (EMBEDDED_DIR, EMBEDDED_TEST, EMBEDDED_TRAIN, build_embedded_subset,
                                   load_data, load_embedded, load_idx_dir, split_indices)
from fxtrain.host.idx import IdxError, read_idx, write_idx

MNIST = Path("/work/shared/data/mnist")


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_round_trip_plain_and_gzipped(tmp_path, name):
    array = np.random.default_rng(1).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    assert np.array_equal(read_idx(tmp_path / name), array)


def test_idx_errors_name_the_path_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_idx(tmp_path / "nothere")
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
    with pytest.raises(IdxError, match=r"magic.*not an IDX file"):
        read_idx(bad_magic)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">HBB2I", 0, 8, 2, 3, 3) + b"\0" * 8)
    with pytest.raises(IdxError, match=r"short: header says shape \(3, 3\) \(9 data bytes\) but the file holds 8"):
        read_idx(short)
    truncated = tmp_path / "trunc"
    truncated.write_bytes(struct.pack(">HBB", 0, 8, 3) + b"\0\0")
    with pytest.raises(IdxError, match="truncated header"):
        read_idx(truncated)
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(gzip.compress(b"\0" * 100)[:20])
    with pytest.raises(IdxError, match="corrupt gzip"):
        read_idx(corrupt)


def test_data_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_data(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="has no t10k-images"):
        load_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(FileNotFoundError, match="no matching t10k labels"):
        load_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="expected 4 labels"):
        load_idx_dir(tmp_path)


def test_directory_with_train_and_test_files_uses_them(tmp_path):
    for prefix, n in (("train", 6), ("t10k", 2)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 255, np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8))
    train, test = load_idx_dir(tmp_path)
    assert (len(train), len(test)) == (6, 2)
    assert train.images.shape == (6, 1, 28, 28) and float(train.images.max()) == 1.0
    assert test.labels.tolist() == [0, 1]


def test_split_is_deterministic_disjoint_and_complete():
    train, test = split_indices(10_000)
    assert len(test) == 2000 and len(train) == 8000
    assert len(np.union1d(train, test)) == 10_000 and len(np.intersect1d(train, test)) == 0
    again_train, again_test = split_indices(10_000)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    with pytest.raises(ValueError, match="Test fraction"):
        split_indices(10, 1.5)


def test_embedded_subset_is_small_and_well_formed():
    train, test = load_embedded()
    assert (len(train), len(test)) == (EMBEDDED_TRAIN, EMBEDDED_TEST)
    assert train.images.shape[1:] == (1, 28, 28)
    assert set(train.labels.unique().tolist()) == set(range(10))
    assert sum(p.stat().st_size for p in EMBEDDED_DIR.glob("*.gz")) < 1_000_000


@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST 10k set not available")
def test_embedded_subset_rebuilds_byte_for_byte(tmp_path):
    """build_embedded_subset regenerates exactly the shipped files, and they are the start of the 10k split."""
    for path in build_embedded_subset(MNIST, tmp_path):
        assert path.read_bytes() == (EMBEDDED_DIR / path.name).read_bytes(), path.name
    full_train, full_test = load_idx_dir(MNIST)
    train, test = load_embedded()
    assert (len(full_train), len(full_test)) == (8000, 2000)
    assert np.array_equal(full_train.images[:EMBEDDED_TRAIN].numpy(), train.images.numpy())
    assert np.array_equal(full_test.labels[:EMBEDDED_TEST].numpy(), test.labels.numpy())
