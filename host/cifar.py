"""CIFAR-10 in its "python version" layout: ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``.

Each file is a pickled dict with ``b"data"`` (N x 3072 uint8, rows of 1024 red, 1024 green, 1024 blue values of a
32 x 32 image in row-major order) and ``b"labels"`` (N ints 0..9). The files are read with a restricted unpickler
that only rebuilds numpy arrays, so a crafted file cannot run code. Any subset of the five training batches is
accepted (they are concatenated in order); ``test_batch`` is required.

Members
-------
is_cifar10_dir
    Whether a directory looks like the CIFAR-10 python layout.
load_cifar10_dir
    ``(train, test)`` :class:`fxtrain.host.datasets.Dataset` of N x 3 x 32 x 32 images in [0, 1].
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = ["is_cifar10_dir", "load_cifar10_dir", "TRAIN_BATCHES", "TEST_BATCH"]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}, which is not a numpy array part")


def is_cifar10_dir(directory) -> bool:
    directory = Path(directory)
    return (directory / TEST_BATCH).is_file() or (directory / TRAIN_BATCHES[0]).is_file()


def _read_batch(path: Path):
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must be N x 3072 uint8, not {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"{path}: b'labels' must be {data.shape[0]} integers 0..9")
    return data, labels


def _dataset(parts, name):
    from .datasets import Dataset

    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return Dataset(images, torch.from_numpy(labels), name)


def load_cifar10_dir(directory):
    """``(train, test)`` of a CIFAR-10 python directory; FileNotFoundError naming the missing files."""
    directory = Path(directory)
    train = [directory / n for n in TRAIN_BATCHES if (directory / n).is_file()]
    if not train or not (directory / TEST_BATCH).is_file():
        raise FileNotFoundError(f"CIFAR-10 directory {directory} needs {TEST_BATCH} and at least "
                                f"{TRAIN_BATCHES[0]} (of {', '.join(TRAIN_BATCHES)})")
    return (_dataset([_read_batch(p) for p in train], f"{directory.name}:cifar10-train"),
            _dataset([_read_batch(directory / TEST_BATCH)], f"{directory.name}:cifar10-test"))
