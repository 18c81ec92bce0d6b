"""Image-classification data for training: the embedded MNIST subset and user IDX directories.

Data directory layout (MNIST / Fashion-MNIST names, each file gzipped or not)::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]   (optional)
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

With both sets, they are the train and test split. With only the ``t10k`` set (such as the 10,000-image MNIST
test set in ``/work/shared/data/mnist``), its images are split deterministically by :func:`split_indices`
(``TEST_FRACTION`` of them, chosen by a fixed permutation, are the test split).

The embedded default (``fxtrain/host/data/mnist-subset-*.gz``, package data, ~0.4 MB) holds the first
``EMBEDDED_TRAIN`` images of that train split and the first ``EMBEDDED_TEST`` of that test split of the MNIST
10k set. Rebuild it with::

    python -c "from fxtrain.host.datasets import build_embedded_subset; build_embedded_subset('/work/shared/data/mnist')"

Members
-------
Dataset
    ``images`` (N x 1 x 28 x 28 float32 in [0, 1]) and ``labels`` (N int64) tensors, and a name.
split_indices
    Deterministic train/test index split of N items.
load_idx_dir
    Train and test :class:`Dataset` of a directory.
load_embedded
    The embedded subset.
load_data
    ``None`` / ``"embedded"`` -> embedded subset, otherwise a directory.
build_embedded_subset
    Regenerate the embedded subset from an MNIST directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .idx import read_idx, write_idx

__all__ = ["Dataset", "split_indices", "load_idx_dir", "load_embedded", "load_data", "build_embedded_subset",
           "EMBEDDED_DIR", "EMBEDDED_TRAIN", "EMBEDDED_TEST", "TEST_FRACTION", "SPLIT_SEED"]

EMBEDDED_DIR = Path(__file__).resolve().parent / "data"
EMBEDDED_TRAIN = 2000
EMBEDDED_TEST = 500
TEST_FRACTION = 0.2
SPLIT_SEED = 20150209  # the arXiv date of Gupta et al.; any fixed value works
_EMBEDDED_PREFIX = "mnist-subset"


@dataclass
class Dataset:
    """Images (N x 1 x H x W float32, values in [0, 1]) and labels (N int64)."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"Dataset {self.name!r} has {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.labels)

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray, name: str = "") -> "Dataset":
        if images.ndim != 3:
            raise ValueError(f"Dataset {name!r}: images must be N x H x W, not shape {images.shape}")
        if labels.ndim != 1:
            raise ValueError(f"Dataset {name!r}: labels must be a vector, not shape {labels.shape}")
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        return cls(x, torch.from_numpy(labels.astype(np.int64)), name)

    def subset(self, count: int) -> "Dataset":
        return Dataset(self.images[:count], self.labels[:count], f"{self.name}[:{count}]")


def split_indices(n: int, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
    """``(train, test)`` index arrays of a fixed permutation of ``range(n)``; ``round(n * test_fraction)`` test
    items. The same ``n``, fraction and seed always give the same split (numpy's PCG64)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"Test fraction must be between 0 and 1, not {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _find(directory: Path, stem: str):
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _pair(directory: Path, prefix: str):
    images = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels = _find(directory, f"{prefix}-labels-idx1-ubyte")
    if (images is None) != (labels is None):
        present, missing = (images, "labels") if labels is None else (labels, "images")
        raise FileNotFoundError(f"Data directory {directory}: found {present.name} but no matching {prefix} "
                                f"{missing} file ({prefix}-{missing}-idx{3 if missing == 'images' else 1}-ubyte[.gz])")
    if images is None:
        return None
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"{images}: expected N x H x W unsigned bytes, got shape {x.shape} of {x.dtype}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{labels}: expected {len(x)} labels to match {images.name}, got shape {y.shape}")
    return x, y


def load_idx_dir(directory, test_fraction: float = TEST_FRACTION):
    """``(train, test)`` datasets of an IDX directory (module docstring).

    Raises FileNotFoundError naming the directory and the expected file names if it or its files are missing,
    and ValueError (:class:`fxtrain.host.idx.IdxError`) for malformed files.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Data directory {directory} does not exist")
    test = _pair(directory, "t10k")
    train = _pair(directory, "train")
    if test is None:
        raise FileNotFoundError(f"Data directory {directory} has no t10k-images-idx3-ubyte[.gz] and "
                                f"t10k-labels-idx1-ubyte[.gz] (MNIST/Fashion-MNIST IDX layout)")
    if train is None:
        train_idx, test_idx = split_indices(len(test[1]), test_fraction)
        x, y = test
        return (Dataset.from_arrays(x[train_idx], y[train_idx], f"{directory.name}:split-train"),
                Dataset.from_arrays(x[test_idx], y[test_idx], f"{directory.name}:split-test"))
    return (Dataset.from_arrays(*train, f"{directory.name}:train"),
            Dataset.from_arrays(*test, f"{directory.name}:test"))


def load_embedded():
    """``(train, test)`` of the embedded MNIST subset (``EMBEDDED_TRAIN`` + ``EMBEDDED_TEST`` images)."""
    train = _pair(EMBEDDED_DIR, f"{_EMBEDDED_PREFIX}-train")
    test = _pair(EMBEDDED_DIR, f"{_EMBEDDED_PREFIX}-t10k")
    if train is None or test is None:
        raise FileNotFoundError(f"The embedded MNIST subset is missing from {EMBEDDED_DIR}; rebuild it with "
                                f"fxtrain.host.datasets.build_embedded_subset")
    return (Dataset.from_arrays(*train, "embedded-mnist:train"), Dataset.from_arrays(*test, "embedded-mnist:test"))


def load_data(spec=None):
    """``(train, test)``: the embedded subset for ``None`` or ``"embedded"``, a CIFAR-10 python directory
    (:mod:`fxtrain.host.cifar`), else the IDX directory ``spec``."""
    if spec is None or spec == "embedded":
        return load_embedded()
    from .cifar import is_cifar10_dir, load_cifar10_dir
    if is_cifar10_dir(spec):
        return load_cifar10_dir(spec)
    return load_idx_dir(spec)


def build_embedded_subset(mnist_dir, out_dir=None, n_train: int = EMBEDDED_TRAIN, n_test: int = EMBEDDED_TEST):
    """Write the embedded subset (module docstring) from the MNIST 10k set in ``mnist_dir`` to ``out_dir``
    (default: the package's ``data`` directory); returns the written paths."""
    pair = _pair(Path(mnist_dir), "t10k")
    if pair is None:
        raise FileNotFoundError(f"{mnist_dir} has no t10k-images-idx3-ubyte[.gz]/t10k-labels-idx1-ubyte[.gz]")
    x, y = pair
    train_idx, test_idx = split_indices(len(y))
    out_dir = Path(EMBEDDED_DIR if out_dir is None else out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for split, idx in (("train", train_idx[:n_train]), ("t10k", test_idx[:n_test])):
        for kind, array in (("images-idx3", x[idx]), ("labels-idx1", y[idx])):
            path = out_dir / f"{_EMBEDDED_PREFIX}-{split}-{kind}-ubyte.gz"
            write_idx(path, array)
            paths.append(path)
    return paths
