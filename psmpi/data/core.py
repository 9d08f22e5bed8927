"""Dataset sources and per-worker shards."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import PsmpiError


class DataError(PsmpiError, ValueError):
    """A dataset that cannot be read or split as asked; the message is one line for the user."""


EMBEDDED = {
    # name: (the scikit-learn loader its file was made from, description); files in embedded/, see its README
    "breast-cancer": ("load_breast_cancer", "binary, 569 x 30 (UCI, as in scikit-learn), features scaled to [-1, 1]"),
    "digits": ("load_digits", "10 classes, 1797 x 64 (UCI, as in scikit-learn), features scaled to [0, 1]"),
    "iris": ("load_iris", "3 classes, 150 x 4 (UCI, as in scikit-learn), features scaled to [0, 1]"),
    "wine": ("load_wine", "3 classes, 178 x 13 (UCI, as in scikit-learn), features scaled to [0, 1]"),
}
DEFAULT_DATASET = "breast-cancer"
DATA_ENV = "PSMPI_DATA"
TEXT_SUFFIXES = (".txt", ".libsvm", ".svm", ".svmlight", ".bz2", ".gz", ".xz")


def data_dir() -> str:
    """Where well-known datasets live: $PSMPI_DATA, else ~/.cache/psmpi/data."""
    return os.path.expanduser(os.environ.get(DATA_ENV) or os.path.join("~", ".cache", "psmpi", "data"))


@dataclass
class Shard:
    A: sp.csr_matrix | np.ndarray  # the rows: CSR, or float32 dense (load_shard(dense=True))
    labels: np.ndarray  # raw label values
    rows: np.ndarray  # global row indices


class Dataset:
    """A dataset known by shape and labels; rows are read on demand."""

    name: str
    n_rows: int
    n_features: int
    labels: np.ndarray
    nnz: int | None = None  # stored nonzeros when known without reading the rows
    image_shape: tuple | None = None  # (channels, height, width) of an image dataset (psmpi.data.images)

    def read_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """CSR (float64) of the given global rows, in the order given."""
        raise NotImplementedError

    def read_dense(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), n_features) of the given global rows, in the order given."""
        return self.read_rows(rows).toarray().astype(np.float32)

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.labels)


class InMemory(Dataset):
    def __init__(self, name, X, y):
        self.name = name
        self.X = sp.csr_matrix(X, dtype=np.float64)
        self.labels = np.asarray(y, dtype=np.float64)
        self.n_rows, self.n_features = self.X.shape
        self.nnz = int(self.X.nnz)

    def read_rows(self, rows):
        return self.X[np.asarray(rows, dtype=np.int64)]


def embedded_path(name: str) -> str:
    """The package file holding an embedded dataset (X float64, y int64, as scikit-learn loads it)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded", f"{name}.npz")


def _embedded(name):
    with np.load(embedded_path(name)) as f:
        X, y = f["X"], f["y"]
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    return InMemory(name, X / scale, y)


def stem(path: str) -> str:
    """a9a.txt.bz2 -> a9a; /x/w8a.h5 -> w8a."""
    base = os.path.basename(str(path))
    while True:
        root, ext = os.path.splitext(base)
        if ext.lower() in TEXT_SUFFIXES + (".h5", ".hdf5") and root:
            base = root
        else:
            return base


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def resolve(spec: str) -> str | None:
    """The file a dataset spec names: the path itself, or NAME.h5 / NAME / NAME.txt in the data directory."""
    if os.path.exists(spec):
        return spec
    if spec.startswith("~") and os.path.exists(os.path.expanduser(spec)):
        return os.path.expanduser(spec)
    if os.sep in spec or (os.altsep and os.altsep in spec):
        return None
    folder = data_dir()
    for cand in (f"{spec}.h5", spec, f"{spec}.txt"):
        p = os.path.join(folder, cand)
        if os.path.isfile(p):
            return p
    return None


def open_file(path: str, name: str | None = None) -> Dataset:
    if os.path.isdir(path):
        raise DataError(f"dataset '{path}' is a directory, not a dataset file")
    if _is_hdf5(path):
        from .store import H5Dataset

        return H5Dataset(path, name=name)
    from .libsvm import read_libsvm

    X, y = read_libsvm(path)
    ds = InMemory(name or stem(path), X, y)
    ds.path = path
    return ds


def open_dataset(spec: str) -> Dataset:
    """An embedded name, ``synthetic:...``, a file (.h5 or LIBSVM text, optionally
    compressed) or a well-known name found in the data directory (see :func:`data_dir`)."""
    spec = str(spec)
    if spec in EMBEDDED:
        return _embedded(spec)
    if spec.startswith("synthetic:") or spec == "synthetic":
        from .synthetic import synthetic

        return synthetic(spec)
    path = resolve(spec)
    if path is None and (os.sep in spec or stem(spec) != spec):
        raise DataError(f"dataset file '{spec}' not found")
    if path is None:
        from .fetch import CATALOG

        hint = f"; `psmpi data fetch {spec}` downloads it" if spec in CATALOG else ""
        raise DataError(f"dataset '{spec}' not found: not an embedded name ({', '.join(EMBEDDED)}), "
                        f"not a file, and not in the data directory {data_dir()} (set ${DATA_ENV}){hint}")
    return open_file(path, name=stem(spec) if path != spec else None)


def class_labels(labels: np.ndarray, classes: np.ndarray, binary: bool):
    """Binary: smaller label -> -1, larger -> +1. Multiclass: index into sorted classes."""
    if binary:
        if len(classes) != 2:
            raise DataError(f"binary logistic regression needs 2 label values, found {len(classes)}")
        return np.where(labels == classes[1], 1.0, -1.0)
    return np.searchsorted(classes, labels).astype(np.int64)


_LAST_SPLIT: list = [None, None]  # (key, parts): serial runs ask n times for the same split


def _cached_split(ds: Dataset, n_workers: int, split: str, seed: int):
    from .splits import split_rows

    key = (ds.n_rows, n_workers, split, seed)
    cached_key, parts = _LAST_SPLIT
    if cached_key is not None and cached_key[0] is ds.labels and cached_key[1:] == key:
        return parts
    parts = split_rows(ds.n_rows, n_workers, split, seed, ds.labels)
    _LAST_SPLIT[:] = [(ds.labels, *key), parts]
    return parts


class RowSubset(Dataset):
    """Some rows of a dataset (in the order given) as a dataset of their own, e.g. the
    training part of a seeded hold-out; its classes are the whole dataset's."""

    def __init__(self, ds: Dataset, rows, name: str):
        self.ds, self.rows = ds, np.asarray(rows, dtype=np.int64)
        self.name, self.n_rows, self.n_features = name, len(self.rows), ds.n_features
        self.labels = ds.labels[self.rows]
        self.image_shape = ds.image_shape

    @property
    def classes(self) -> np.ndarray:
        return self.ds.classes

    def read_rows(self, rows):
        return self.ds.read_rows(self.rows[np.asarray(rows, dtype=np.int64)])

    def read_dense(self, rows):
        return self.ds.read_dense(self.rows[np.asarray(rows, dtype=np.int64)])


def hold_out(ds: Dataset, fraction: float, seed: int) -> tuple[RowSubset, RowSubset]:
    """(training rows, test rows): round(fraction * rows) rows drawn from (seed) alone
    for the test set, both kept in file order."""
    n_test = int(round(fraction * ds.n_rows))
    if not 0 < n_test < ds.n_rows:
        raise DataError(f"--test-fraction {fraction} of {ds.n_rows} rows leaves no test or no training rows")
    from .splits import HOLD_OUT_KEY, _rng

    rng = _rng(seed, HOLD_OUT_KEY)
    test = np.sort(rng.choice(ds.n_rows, size=n_test, replace=False))
    train = np.setdiff1d(np.arange(ds.n_rows), test)
    return RowSubset(ds, train, f"{ds.name}-train"), RowSubset(ds, test, f"{ds.name}-test")


def load_shard(ds: Dataset, n_workers: int, index: int, split: str = "contiguous", seed: int = 0,
               dense: bool = False) -> Shard:
    """Worker ``index``'s rows (0-based among ``n_workers``), reading only those rows;
    with ``dense`` as float32 rows (images for a neural network)."""
    if not 0 <= index < n_workers:
        raise DataError(f"worker index {index} out of range for {n_workers} workers")
    rows = _cached_split(ds, n_workers, split, seed)[index]
    return Shard(ds.read_dense(rows) if dense else ds.read_rows(rows), ds.labels[rows], rows)
