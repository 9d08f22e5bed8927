"""HDF5 store of a CSR matrix and labels (written by ``psmpi data convert``)."""
from __future__ import annotations

import h5py
import numpy as np
import scipy.sparse as sp

from .core import DataError, Dataset


class H5Dataset(Dataset):
    def __init__(self, path):
        self.path = path
        self.name = path
        try:
            with h5py.File(path, "r") as f:
                self.n_rows, self.n_features = (int(v) for v in f["shape"][()])
                self.labels = f["labels"][()].astype(np.float64)
        except (OSError, KeyError) as e:
            raise DataError(f"{path}: not a psmpi HDF5 dataset ({e})") from None

    def read_rows(self, rows):
        rows = np.asarray(rows)
        with h5py.File(self.path, "r") as f:
            indptr = f["indptr"][()]
            parts = []
            for r in rows:
                a, b = indptr[r], indptr[r + 1]
                parts.append((f["indices"][a:b], f["data"][a:b]))
        ind = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        dat = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        ptr = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])])
        return sp.csr_matrix((dat, ind, ptr), shape=(len(rows), self.n_features))


def write_h5(path, X, y):
    X = sp.csr_matrix(X)
    with h5py.File(path, "w") as f:
        f["shape"] = np.array(X.shape, dtype=np.int64)
        f.create_dataset("data", data=X.data, compression="gzip")
        f.create_dataset("indices", data=X.indices, compression="gzip")
        f.create_dataset("indptr", data=X.indptr.astype(np.int64))
        f.create_dataset("labels", data=np.asarray(y))
