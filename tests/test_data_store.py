"""The HDF5 store: exact round trip, per-worker reads of only the worker's rows, atomic writes."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_svmlight_file

from conftest import libsvm_file
from psmpi.data import DataError, load_shard, open_dataset, split_rows
from psmpi.data import store
from psmpi.data.convert import convert
from psmpi.data.store import H5Dataset, write_h5


def small_text(tmp_path, rows=500, d=40, seed=0, name="small.txt"):
    """A generated LIBSVM file with varied row lengths (some rows empty)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(rows):
        cols = np.sort(rng.choice(d, size=rng.integers(0, 8), replace=False)) + 1
        lines.append(" ".join([str(int(rng.integers(0, 3)))] + [f"{c}:{rng.standard_normal():.6g}" for c in cols]))
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def source(tmp_path, name):
    p = libsvm_file(name)
    return p if p is not None else small_text(tmp_path, name=f"{name}.txt")


@pytest.mark.parametrize("name", ["a9a", "mushrooms", "phishing"])
def test_conversion_round_trip_equals_sklearn(tmp_path, name):
    src = source(tmp_path, name)
    out = tmp_path / f"{name}.h5"
    r = convert(str(src), str(out))
    Xr, yr = load_svmlight_file(str(src), dtype=np.float64)
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "psmpi-csr" and f.attrs["version"] == 1
        assert tuple(f["shape"][()]) == Xr.shape
        assert np.array_equal(f["indptr"][()], Xr.indptr)
        assert np.array_equal(f["indices"][()], Xr.indices)
        assert np.array_equal(f["data"][()].view(np.int64), Xr.data.view(np.int64))
        assert np.array_equal(f["labels"][()], yr)
        assert f["data"].compression == "gzip" and f["data"].chunks is not None
    ds = open_dataset(str(out))
    assert (ds.n_rows, ds.n_features, ds.nnz) == (Xr.shape[0], Xr.shape[1], Xr.nnz) == (r.n_rows, r.n_features, r.nnz)
    assert ds.name == name
    full = ds.read_rows(np.arange(ds.n_rows))
    assert (full != Xr).nnz == 0 and np.array_equal(full.indptr, Xr.indptr)
    if libsvm_file(name) is not None:
        assert os.path.getsize(out) < os.path.getsize(src) / 3  # compressed well below the text


def test_read_rows_returns_exactly_the_rows_asked_in_order(tmp_path):
    src = small_text(tmp_path, rows=3000)
    X, _ = load_svmlight_file(str(src), dtype=np.float64)
    out = tmp_path / "s.h5"
    convert(str(src), str(out))
    ds = H5Dataset(str(out))
    rng = np.random.default_rng(3)
    cases = [np.arange(100, 900), rng.permutation(3000)[:700], np.array([5, 3, 3, 2999, 0, 7, 6]),
             np.array([], dtype=np.int64), np.arange(3000)[::-1], np.r_[np.arange(10, 20), np.arange(40, 60)]]
    for rows in cases:
        A = ds.read_rows(rows)
        assert A.shape == (len(rows), X.shape[1]) and A.dtype == np.float64 and sp.isspmatrix_csr(A)
        assert (A != X[rows]).nnz == 0 and np.array_equal(A.indptr, X[rows].indptr)
    with pytest.raises(DataError, match="out of range"):
        ds.read_rows(np.array([3000]))


class ReadSpy:
    """Records every (dataset, element ranges) read from the file."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = store._read_runs

        def spy(dset, starts, stops):
            self.calls.append((dset.name.lstrip("/"), np.array(starts), np.array(stops)))
            return real(dset, starts, stops)

        monkeypatch.setattr(store, "_read_runs", spy)

    def elements(self, name):
        parts = [np.concatenate([np.arange(a, b) for a, b in zip(s, e)] or [np.zeros(0, int)])
                 for n, s, e in self.calls if n == name]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, int)


@pytest.mark.parametrize("split", ["contiguous", "shuffle", "label-sorted", "dirichlet:0.3"])
def test_each_worker_reads_only_its_own_rows(tmp_path, monkeypatch, split):
    src = source(tmp_path, "a9a")
    X, y = load_svmlight_file(str(src), dtype=np.float64)
    out = tmp_path / "a.h5"
    convert(str(src), str(out))
    ds = open_dataset(str(out))
    n = 20
    parts = split_rows(ds.n_rows, n, split, 7, ds.labels)
    for i in (0, 9, n - 1):
        spy = ReadSpy(monkeypatch)
        shard = load_shard(ds, n, i, split, 7)
        rows = parts[i]
        assert np.array_equal(shard.rows, rows)
        assert (shard.A != X[rows]).nnz == 0 and np.array_equal(shard.labels, y[rows])
        # what left the file: indptr entries r and r+1 of the worker's rows, and exactly their nonzeros
        wanted_ptr = np.union1d(rows, rows + 1)
        wanted_nnz = np.sort(np.concatenate([np.arange(X.indptr[r], X.indptr[r + 1]) for r in rows]))
        assert set(spy.elements("indptr")) <= set(wanted_ptr) and set(rows) <= set(spy.elements("indptr"))
        assert np.array_equal(spy.elements("data"), wanted_nnz)
        assert np.array_equal(spy.elements("indices"), wanted_nnz)
        assert {c[0] for c in spy.calls} == {"indptr", "data", "indices"}
        monkeypatch.undo()
    if split == "contiguous":  # one hyperslab per array for a contiguous block of rows
        spy = ReadSpy(monkeypatch)
        load_shard(ds, n, 3, split, 7)
        assert all(len(s) == 1 for _, s, _ in spy.calls)


def test_failed_conversion_leaves_nothing_and_keeps_old_output(tmp_path, monkeypatch):
    from psmpi.data import libsvm

    monkeypatch.setattr(libsvm, "BLOCK_BYTES", 1 << 16)  # many blocks are written before the bad line
    appended = []
    real_append = store.H5Writer.append
    monkeypatch.setattr(store.H5Writer, "append", lambda self, *a: appended.append(1) or real_append(self, *a))
    src = tmp_path / "bad.txt"
    src.write_text("".join(f"{i % 2} 1:{i} 3:1\n" for i in range(50_000)) + "1 2:1 1:1\n")
    out = tmp_path / "out.h5"
    with pytest.raises(DataError, match=r"bad\.txt:50001: feature indices must increase"):
        convert(str(src), str(out))
    assert len(appended) > 5
    assert sorted(os.listdir(tmp_path)) == ["bad.txt"]
    out.write_bytes(b"previous")
    with pytest.raises(DataError):
        convert(str(src), str(out))
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "out.h5"]


def test_converting_to_text_and_back_is_exact(tmp_path):
    src = small_text(tmp_path)
    h5 = tmp_path / "a.h5"
    convert(str(src), str(h5))
    back = tmp_path / "back.txt"
    convert(str(h5), str(back))
    X, y = load_svmlight_file(str(src), dtype=np.float64)
    Xb, yb = load_svmlight_file(str(back), dtype=np.float64, n_features=X.shape[1])
    assert (X != Xb).nnz == 0 and np.array_equal(y, yb)


def test_any_dataset_converts_to_h5(tmp_path):
    out = tmp_path / "digits.h5"
    convert("digits", str(out))
    a, b = open_dataset("digits"), open_dataset(str(out))
    assert (a.read_rows(np.arange(a.n_rows)) != b.read_rows(np.arange(b.n_rows))).nnz == 0
    assert np.array_equal(a.labels, b.labels) and b.n_features == 64


def test_foreign_or_newer_hdf5_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not a psmpi dataset"):
        open_dataset(str(foreign))
    newer = tmp_path / "newer.h5"
    write_h5(newer, sp.csr_matrix(np.eye(3)), [0, 1, 0])
    with h5py.File(newer, "a") as f:
        f.attrs["version"] = 99
    with pytest.raises(DataError, match="newer"):
        open_dataset(str(newer))


def test_write_h5_of_an_empty_matrix_and_int64_indices(tmp_path):
    p = tmp_path / "z.h5"
    write_h5(p, sp.csr_matrix((4, 7)), [1, 2, 1, 2])
    ds = open_dataset(str(p))
    assert ds.read_rows(np.arange(4)).nnz == 0 and ds.n_features == 7
    big = tmp_path / "wide.h5"
    with store.H5Writer(str(big)) as w:
        w.append([1.0, -1.0], [1, 1], np.array([3, 2 ** 31 + 5]), [1.5, 2.5])
        w.close()
    ds = open_dataset(str(big))
    A = ds.read_rows(np.array([1, 0]))
    assert ds.n_features == 2 ** 31 + 6 and A.indices.tolist() == [2 ** 31 + 5, 3] and A.data.tolist() == [2.5, 1.5]
