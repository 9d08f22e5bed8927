"""Dataset sources and per-worker shards."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


class DataError(ValueError):
    """A dataset that cannot be read or split as asked."""


EMBEDDED = {
    # name: (scikit-learn loader, description)
    "breast-cancer": ("load_breast_cancer", "binary, 569 x 30 (scikit-learn), features scaled to [-1, 1]"),
    "digits": ("load_digits", "10 classes, 1797 x 64 (scikit-learn), features scaled to [0, 1]"),
    "iris": ("load_iris", "3 classes, 150 x 4 (scikit-learn), features scaled to [0, 1]"),
    "wine": ("load_wine", "3 classes, 178 x 13 (scikit-learn), features scaled to [0, 1]"),
}
DEFAULT_DATASET = "breast-cancer"


@dataclass
class Shard:
    A: sp.csr_matrix
    labels: np.ndarray  # raw label values
    rows: np.ndarray  # global row indices


class Dataset:
    """A dataset known by shape and labels; rows are read on demand."""

    name: str
    n_rows: int
    n_features: int
    labels: np.ndarray

    def read_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        raise NotImplementedError

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.labels)


class InMemory(Dataset):
    def __init__(self, name, X, y):
        self.name = name
        self.X = sp.csr_matrix(X, dtype=np.float64)
        self.labels = np.asarray(y, dtype=np.float64)
        self.n_rows, self.n_features = self.X.shape

    def read_rows(self, rows):
        return self.X[rows]


def _embedded(name):
    import sklearn.datasets as skd

    loader = getattr(skd, EMBEDDED[name][0])
    X, y = loader(return_X_y=True)
    X = np.asarray(X, dtype=np.float64)
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    return InMemory(name, X / scale, y)


def open_dataset(spec: str) -> Dataset:
    spec = str(spec)
    if spec in EMBEDDED:
        return _embedded(spec)
    if spec.startswith("synthetic:"):
        from .synthetic import synthetic

        return synthetic(spec)
    if not os.path.exists(spec):
        raise DataError(f"dataset '{spec}' not found: not an embedded name ({', '.join(EMBEDDED)}) nor a file")
    if spec.endswith((".h5", ".hdf5")):
        from .store import H5Dataset

        return H5Dataset(spec)
    from .libsvm import read_libsvm

    X, y = read_libsvm(spec)
    return InMemory(os.path.basename(spec), X, y)


def class_labels(labels: np.ndarray, classes: np.ndarray, binary: bool):
    """Binary: smaller label -> -1, larger -> +1. Multiclass: index into sorted classes."""
    if binary:
        if len(classes) != 2:
            raise DataError(f"binary logistic regression needs 2 label values, found {len(classes)}")
        return np.where(labels == classes[1], 1.0, -1.0)
    return np.searchsorted(classes, labels).astype(np.int64)


def load_shard(ds: Dataset, n_workers: int, index: int, split: str = "contiguous", seed: int = 0) -> Shard:
    from .splits import split_rows

    rows = split_rows(ds.n_rows, n_workers, split, seed, ds.labels)[index]
    return Shard(ds.read_rows(rows), ds.labels[rows], rows)
