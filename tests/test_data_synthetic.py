"""Synthetic data: seeded, generated per row block, heterogeneity by position, huge sparse d."""
from __future__ import annotations

import numpy as np
import pytest

from psmpi.data import DataError, load_shard, open_dataset, split_rows
from psmpi.data.synthetic import BLOCK


def test_worker_rows_equal_the_full_generation():
    spec = "synthetic:rows=5000,features=300,classes=3,density=0.05,hetero=0.5,seed=4"
    full = open_dataset(spec).read_rows(np.arange(5000))
    for split in ("contiguous", "shuffle"):
        for i in (0, 3, 6):
            fresh = open_dataset(spec)  # as another rank would: nothing shared
            shard = load_shard(fresh, 7, i, split, seed=1)
            assert (shard.A != full[shard.rows]).nnz == 0
            assert np.array_equal(shard.A.indptr, full[shard.rows].indptr)


def test_workers_generate_only_the_blocks_holding_their_rows(monkeypatch):
    ds = open_dataset("synthetic:rows=10000,features=100,density=0.1")
    made = []
    real = type(ds).block
    monkeypatch.setattr(type(ds), "block", lambda self, k: made.append(k) or real(self, k))
    rows = split_rows(10000, 10, "contiguous")[4]  # rows 4000..4999
    ds.read_rows(rows)
    assert sorted(made) == list(range(4000 // BLOCK, 4999 // BLOCK + 1))


def test_seed_and_options_change_the_data():
    a = open_dataset("synthetic:rows=300,features=40,seed=1")
    b = open_dataset("synthetic:rows=300,features=40,seed=1")
    c = open_dataset("synthetic:rows=300,features=40,seed=2")
    A, B, C = (d.read_rows(np.arange(300)) for d in (a, b, c))
    assert (A != B).nnz == 0 and np.array_equal(a.labels, b.labels)
    assert (A != C).nnz > 0
    assert A.nnz == 300 * 40  # density 1: dense rows


def test_hetero_sorts_labels_by_position():
    iid = open_dataset("synthetic:rows=4000,classes=2,hetero=0,seed=3")
    het = open_dataset("synthetic:rows=4000,classes=2,hetero=1,seed=3")
    assert np.array_equal(het.labels, np.repeat([0.0, 1.0], 2000))
    first_half = iid.labels[:2000].mean()
    assert 0.4 < first_half < 0.6


def test_labels_are_learnable_from_features():
    ds = open_dataset("synthetic:rows=2000,features=200,density=0.2,seed=0")
    X = ds.read_rows(np.arange(2000))
    y = np.where(ds.labels > 0, 1.0, -1.0)
    w = X.T @ y  # a crude linear classifier
    acc = np.mean(np.sign(X @ w) == y)
    assert acc > 0.9


def test_ten_million_features_stay_sparse_and_cheap():
    ds = open_dataset("synthetic:rows=100000,features=10000000,density=2e-6,classes=2,seed=1")
    assert ds.n_features == 10_000_000
    A = ds.read_rows(np.arange(50_000, 50_100))
    assert A.shape == (100, 10_000_000)
    assert 1000 < A.nnz < 3000  # about 20 nonzeros per row
    assert A.indices.max() < 10_000_000 and np.all(np.diff(A.indptr) >= 0)


@pytest.mark.parametrize("spec,words", [
    ("synthetic:rows=10,color=3", "unknown synthetic option 'color'"),
    ("synthetic:rows=ten", "bad value for synthetic option 'rows'"),
    ("synthetic:density=0", "density must be in"),
    ("synthetic:hetero=2", "hetero must be in"),
    ("synthetic:classes=1", "classes must be at least 2"),
    ("synthetic:rows=1.5", "bad value"),
])
def test_bad_synthetic_specs(spec, words):
    with pytest.raises(DataError, match=words):
        open_dataset(spec)
