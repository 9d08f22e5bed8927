"""Splits: contiguous as SPEC.md, seeded shuffle, label-sorted, Dirichlet label skew."""
from __future__ import annotations

import numpy as np
import pytest

from psmpi.data import SPLITS, DataError, check_split, split_rows
from psmpi.data.splits import dirichlet_counts


def labels_of(n, classes=3, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n).astype(float)


def is_partition(parts, n):
    allrows = np.concatenate(parts)
    return len(allrows) == n and np.array_equal(np.sort(allrows), np.arange(n))


@pytest.mark.parametrize("n_rows,n", [(103, 10), (100, 10), (21, 20), (5, 5), (7, 1)])
def test_contiguous_is_file_order_with_the_remainder_on_the_last_worker(n_rows, n):
    parts = split_rows(n_rows, n, "contiguous")
    per = n_rows // n
    assert [len(p) for p in parts] == [per] * (n - 1) + [n_rows - per * (n - 1)]
    assert np.array_equal(np.concatenate(parts), np.arange(n_rows))


def test_shuffle_is_a_seeded_permutation_in_contiguous_chunks():
    a = split_rows(1000, 7, "shuffle", seed=1)
    b = split_rows(1000, 7, "shuffle", seed=1)
    c = split_rows(1000, 7, "shuffle", seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert is_partition(a, 1000)
    assert [len(p) for p in a] == [142] * 6 + [148]
    assert not np.array_equal(np.concatenate(a), np.arange(1000))


def test_label_sorted_gives_workers_few_labels():
    y = labels_of(600, classes=3)
    parts = split_rows(600, 6, "label-sorted", labels=y)
    assert is_partition(parts, 600)
    assert np.all(np.diff(y[np.concatenate(parts)]) >= 0)
    assert sum(len(np.unique(y[p])) for p in parts) <= 6 + 2  # at most 2 boundary workers see 2 labels


def test_dirichlet_is_seeded_balanced_and_a_partition():
    y = labels_of(2000, classes=4)
    a = split_rows(2000, 13, "dirichlet:0.5", seed=3, labels=y)
    b = split_rows(2000, 13, "dirichlet:0.5", seed=3, labels=y)
    c = split_rows(2000, 13, "dirichlet:0.5", seed=4, labels=y)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c))
    assert is_partition(a, 2000)
    assert [len(p) for p in a] == [len(p) for p in split_rows(2000, 13, "contiguous")]
    assert all(np.all(np.diff(p) > 0) for p in a)  # file order inside a worker


def skew(parts, y):
    """Mean fraction of a worker's rows in its most common label."""
    return float(np.mean([np.bincount(y[p].astype(int)).max() / len(p) for p in parts]))


def test_dirichlet_alpha_controls_label_skew():
    y = labels_of(20_000, classes=4)
    small = skew(split_rows(20_000, 20, "dirichlet:0.01", seed=0, labels=y), y)
    mid = skew(split_rows(20_000, 20, "dirichlet:1", seed=0, labels=y), y)
    large = skew(split_rows(20_000, 20, "dirichlet:1000", seed=0, labels=y), y)
    assert small > 0.9  # nearly one label per worker
    assert large < 0.3  # close to the global mix (0.25 each)
    assert small > mid > large


def test_dirichlet_counts_respect_class_totals_and_worker_sizes():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    C = dirichlet_counts(y, 7, 0.2, seed=5)
    assert C.sum(axis=0).tolist() == [50, 30, 20]
    assert C.sum(axis=1).tolist() == [14] * 6 + [16]


def test_every_rank_computes_the_same_split_alone():
    y = labels_of(5000, classes=2, seed=9)
    for split in ("shuffle", "dirichlet:0.3", "label-sorted"):
        ref = split_rows(5000, 20, split, seed=11, labels=y)
        again = split_rows(5000, 20, split, seed=11, labels=y.copy())
        assert all(np.array_equal(p, q) for p, q in zip(ref, again))


def test_bad_splits_and_too_many_workers_are_one_line_errors():
    for bad, words in [("random", "unknown split 'random'"), ("dirichlet", "needs a concentration"),
                       ("dirichlet:-1", "ALPHA must be a positive"), ("dirichlet:abc", "needs a concentration"),
                       ("shuffle:3", "unknown split")]:
        with pytest.raises(DataError, match=words):
            check_split(bad)
    for ok in ("contiguous", "shuffle", "label-sorted", "dirichlet:0.1", "dirichlet:1e3"):
        check_split(ok)
    assert "dirichlet:ALPHA" in SPLITS
    with pytest.raises(DataError, match="cannot split 5 rows across 6 workers"):
        split_rows(5, 6, "contiguous")
    with pytest.raises(DataError, match="needs labels"):
        split_rows(50, 5, "dirichlet:1")
