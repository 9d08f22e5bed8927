"""HDF5 store of a CSR matrix and its labels (written by ``psmpi data convert``).

Layout (format ``psmpi-csr``, version 1)::

    /data     float64 (nnz,)        values, row after row
    /indices  int32|int64 (nnz,)    0-based column of each value
    /indptr   int64 (rows + 1,)     row r is data[indptr[r]:indptr[r+1]]
    /labels   float64 (rows,)       raw label values as in the source file
    /shape    int64 (2,)            rows, features
    attrs: format, version, n_rows, n_features, nnz, name, source

Dense rows (format ``psmpi-dense``, version 1; image datasets, written by
:mod:`psmpi.data.images`)::

    /X        float32 (rows, features)  row r is X[r]
    /labels   int64 (rows,)             class labels as in the source file
    attrs: format, version, n_rows, n_features, image_shape, name, source

``image_shape`` (e.g. (1, 28, 28), channels first) has product n_features.
:class:`H5Dataset` opens both layouts: ``read_rows`` gives CSR rows of either,
``read_dense`` float32 rows of either.

Every array is chunked (32768 elements; dense X by rows, about 1 MiB a chunk)
and deflate-compressed with the shuffle filter, so a worker reading its rows
decompresses only the chunks holding them.  Files are written to a temporary name in the target folder
and renamed when complete: a failed conversion leaves nothing behind.
"""
from __future__ import annotations

import os
import secrets

import h5py
import numpy as np
import scipy.sparse as sp

from .core import DataError, Dataset

FORMAT = "psmpi-csr"
DENSE_FORMAT = "psmpi-dense"
VERSION = 1
CHUNK = 1 << 15
DENSE_CHUNK_BYTES = 1 << 20  # rows per chunk of dense X: about this many bytes
DENSE_SPAN_BYTES = 64 << 20  # scattered dense rows: whole chunks read at most this much at a time
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
MANY_RUNS = 16  # above this many separate row runs, one selection read instead of one read per run


def _open_read(path):
    """Open read-only without HDF5 file locking (files are only ever replaced whole,
    and many MPI ranks may open one file on a parallel file system)."""
    try:
        return h5py.File(path, "r", locking=False)
    except TypeError:  # h5py without the locking argument
        return h5py.File(path, "r")


class AtomicH5:
    """An HDF5 file written under a temporary name in the target folder and renamed
    into place by ``_finish``; as a context manager, an exception removes it."""

    def _create(self, path: str):
        self.path = str(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise DataError(f"cannot write {self.path}: folder {folder} does not exist")
        if os.path.isdir(self.path):
            raise DataError(f"cannot write {self.path}: it is a directory")
        self.tmp = os.path.join(folder, f".{os.path.basename(self.path)}.{secrets.token_hex(4)}.tmp")
        try:
            self.f = h5py.File(self.tmp, "x")
        except OSError as e:
            raise DataError(f"cannot write {self.path}: {e}") from None

    def _finish(self) -> str:
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self):
        try:
            self.f.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


class H5Writer(AtomicH5):
    """Append blocks of rows; ``close(n_features)`` renames the finished file into place.

    Use as a context manager: an exception removes the temporary file.
    """

    def __init__(self, path: str, name: str | None = None, source: str | None = None, index_dtype=np.int32):
        self._create(path)
        self.name = name or os.path.splitext(os.path.basename(self.path))[0]
        self.source = source or ""
        self.n_rows = 0
        self.nnz = 0
        self.max_index = -1
        f = self.f
        self.data = f.create_dataset("data", shape=(0,), maxshape=(None,), chunks=(CHUNK,), dtype=np.float64,
                                     **COMPRESSION)
        self.indices = f.create_dataset("indices", shape=(0,), maxshape=(None,), chunks=(CHUNK,), dtype=index_dtype,
                                        **COMPRESSION)
        self.indptr = f.create_dataset("indptr", shape=(1,), maxshape=(None,), chunks=(CHUNK,), dtype=np.int64,
                                       **COMPRESSION)
        self.labels = f.create_dataset("labels", shape=(0,), maxshape=(None,), chunks=(CHUNK,), dtype=np.float64,
                                       **COMPRESSION)
        self.indptr[0] = 0

    @staticmethod
    def _append(dset, values):
        n = dset.shape[0]
        dset.resize((n + len(values),))
        if len(values):
            dset[n:] = values

    def append(self, labels, row_nnz, indices, data):
        """Rows given as labels, nonzeros per row, 0-based column indices and values."""
        indices = np.asarray(indices)
        if len(indices):
            top = int(indices.max())
            if top > np.iinfo(self.indices.dtype).max:
                self._widen_indices()
            self.max_index = max(self.max_index, top)
        self._append(self.labels, np.asarray(labels, dtype=np.float64))
        self._append(self.indptr, self.nnz + np.cumsum(np.asarray(row_nnz, dtype=np.int64)))
        self._append(self.indices, indices)
        self._append(self.data, np.asarray(data, dtype=np.float64))
        self.n_rows += len(labels)
        self.nnz += len(indices)

    def append_csr(self, X, labels):
        X = sp.csr_matrix(X)
        self.append(labels, np.diff(X.indptr), X.indices, X.data)

    def _widen_indices(self):
        old = self.indices[()]
        del self.f["indices"]
        self.indices = self.f.create_dataset("indices", shape=(0,), maxshape=(None,), chunks=(CHUNK,), dtype=np.int64,
                                             **COMPRESSION)
        self._append(self.indices, old)

    def close(self, n_features: int | None = None) -> str:
        d = self.max_index + 1 if n_features is None else int(n_features)
        f = self.f
        f.create_dataset("shape", data=np.array([self.n_rows, d], dtype=np.int64))
        f.attrs.update(format=FORMAT, version=VERSION, n_rows=self.n_rows, n_features=d, nnz=self.nnz,
                       name=self.name, source=self.source)
        return self._finish()


def write_h5(path, X, y, name=None, source=None) -> str:
    """A whole matrix and its labels to ``path`` (atomically)."""
    X = sp.csr_matrix(X)
    with H5Writer(path, name=name, source=source) as w:
        w.append_csr(X, np.asarray(y, dtype=np.float64))
        return w.close(X.shape[1])


def _read_runs(dset, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Elements [starts[k], stops[k]) of a 1-D dataset, concatenated in order.

    The only place row data leaves the file: a few runs are read as hyperslabs
    one by one; many runs (scattered rows) as one point selection of exactly
    their elements (faster in HDF5 than a union of many hyperslabs).
    """
    counts = stops - starts
    total = int(counts.sum())
    out = np.empty(total, dtype=dset.dtype)
    keep = counts > 0
    starts, counts = starts[keep], counts[keep]
    if total == 0:
        return out
    if len(starts) <= MANY_RUNS:
        pos = 0
        for a, n in zip(starts.tolist(), counts.tolist()):
            dset.read_direct(out, np.s_[a:a + n], np.s_[pos:pos + n])
            pos += n
        return out
    offsets = np.cumsum(counts) - counts
    points = np.arange(total, dtype=np.uint64) + np.repeat((starts - offsets).astype(np.uint64), counts)
    fspace = dset.id.get_space()
    fspace.select_elements(points.reshape(-1, 1))
    dset.id.read(h5py.h5s.create_simple((total,)), fspace, out)
    return out


def row_runs(rows: np.ndarray):
    """Sorted unique rows as maximal runs of consecutive rows -> (starts, stops)."""
    if not len(rows):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.concatenate([[0], brk])]
    stops = rows[np.concatenate([brk - 1, [len(rows) - 1]])] + 1
    return starts.astype(np.int64), stops.astype(np.int64)


class H5Dataset(Dataset):
    """A converted file: shape and labels on open; ``read_rows`` reads only the rows asked for."""

    image_shape: tuple | None = None  # dense image files only

    def __init__(self, path, name=None):
        self.path = str(path)
        try:
            with _open_read(self.path) as f:
                fmt = f.attrs.get("format", None)
                if isinstance(fmt, bytes):
                    fmt = fmt.decode()
                self.dense = fmt == DENSE_FORMAT
                need = ("X", "labels") if self.dense else ("data", "indices", "indptr", "labels", "shape")
                missing = [k for k in need if k not in f]
                if fmt is not None and fmt not in (FORMAT, DENSE_FORMAT) or missing:
                    what = f"format '{fmt}'" if fmt is not None and fmt not in (FORMAT, DENSE_FORMAT) \
                        else f"no {', '.join(missing)}"
                    raise DataError(f"{self.path}: not a psmpi dataset ({what}); make one with `psmpi data convert`")
                version = int(f.attrs.get("version", 0))
                if version > VERSION:
                    raise DataError(f"{self.path}: dataset format version {version} is newer than this psmpi "
                                    f"reads ({VERSION}); upgrade psmpi")
                self.labels = f["labels"][()].astype(np.float64)
                if self.dense:
                    self.n_rows, self.n_features = (int(v) for v in f["X"].shape)
                    self.nnz = None
                    if "image_shape" in f.attrs:
                        self.image_shape = tuple(int(v) for v in f.attrs["image_shape"])
                else:
                    self.n_rows, self.n_features = (int(v) for v in f["shape"][()])
                    self.nnz = int(f.attrs["nnz"]) if "nnz" in f.attrs else int(f["indptr"][-1])
                stored = f.attrs.get("name", None)
        except OSError as e:
            raise DataError(f"{self.path}: cannot read as HDF5 ({str(e).splitlines()[0]})") from None
        if isinstance(stored, bytes):
            stored = stored.decode()
        self.name = name or stored or os.path.splitext(os.path.basename(self.path))[0]
        if len(self.labels) != self.n_rows:
            raise DataError(f"{self.path}: {len(self.labels)} labels for {self.n_rows} rows")

    def _unique_rows(self, rows):
        """(sorted unique rows, inverse) of valid global row indices."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise DataError(f"{self.path}: row index out of range (the file has {self.n_rows} rows)")
        return rows, *np.unique(rows, return_inverse=True)

    def read_dense(self, rows) -> np.ndarray:
        """float32 (len(rows), n_features) of the given global rows, in the order given;
        reads (and decompresses) only the chunks holding them."""
        if not self.dense:
            return super().read_dense(rows)
        rows, uniq, inv = self._unique_rows(rows)
        out = np.empty((len(uniq), self.n_features), dtype=np.float32)
        starts, stops = row_runs(uniq)
        with _open_read(self.path) as f:
            X = f["X"]
            if len(starts) <= MANY_RUNS:
                pos = 0
                for a, b in zip(starts.tolist(), stops.tolist()):
                    X.read_direct(out, np.s_[a:b], np.s_[pos:pos + b - a])
                    pos += b - a
            else:  # scattered rows: read the chunks holding them, a bounded span at a time
                per = X.chunks[0] if X.chunks else 1
                span = max(per, DENSE_SPAN_BYTES // max(1, 4 * self.n_features) // per * per)
                first = uniq[0] // span * span
                for a in range(int(first), int(uniq[-1]) + 1, span):
                    lo, hi = np.searchsorted(uniq, [a, a + span])
                    if lo < hi:
                        block = X[a:min(a + span, self.n_rows)]
                        out[lo:hi] = block[uniq[lo:hi] - a]
        if len(uniq) == len(rows) and np.array_equal(uniq, rows):
            return out
        return out[inv]

    def read_rows(self, rows) -> sp.csr_matrix:
        if self.dense:
            return sp.csr_matrix(self.read_dense(rows), dtype=np.float64)
        rows, uniq, inv = self._unique_rows(rows)
        starts, stops = row_runs(uniq)
        with _open_read(self.path) as f:
            # indptr[a..b] for each run [a, b): b - a + 1 entries
            ptr = _read_runs(f["indptr"], starts, stops + 1)
            sizes = stops - starts + 1
            ends = np.cumsum(sizes)
            lo = ptr[ends - sizes]  # indptr[a] of each run
            hi = ptr[ends - 1]  # indptr[b] of each run
            data = _read_runs(f["data"], lo, hi)
            indices = _read_runs(f["indices"], lo, hi)
        # row lengths: drop the last indptr entry of each run
        keep = np.ones(len(ptr), dtype=bool)
        keep[ends - 1] = False
        row_len = np.diff(ptr)[keep[:-1]] if len(ptr) else np.zeros(0, np.int64)
        indptr = np.concatenate([[0], np.cumsum(row_len)])
        X = sp.csr_matrix((data, indices, indptr), shape=(len(uniq), self.n_features))
        if len(uniq) == len(rows) and np.array_equal(uniq, rows):
            return X
        return X[inv]
