"""Splitting rows across workers; every rank computes the same split alone."""
from __future__ import annotations

import numpy as np

SPLITS = ("contiguous", "shuffle", "label-sorted")


def check_split(split: str) -> None:
    """Raise DataError unless ``split`` names a known split."""
    from .core import DataError

    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")


def split_rows(n_rows: int, n_workers: int, split: str = "contiguous", seed: int = 0, labels=None) -> list[np.ndarray]:
    """Row indices of each worker.

    ``contiguous``: file order, floor(N/n) rows each, the remainder to the last
    worker (as the EF21 papers' code splits data).  ``shuffle``: a seeded
    permutation, then contiguous.  ``label-sorted``: stable sort by label, then
    contiguous (heterogeneous workers).
    """
    from .core import DataError

    if n_workers < 1:
        raise DataError("the number of workers must be at least 1")
    if n_workers > n_rows:
        raise DataError(f"cannot split {n_rows} rows across {n_workers} workers (more workers than rows)")
    if split == "contiguous":
        order = np.arange(n_rows)
    elif split == "shuffle":
        order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,))).permutation(n_rows)
    elif split == "label-sorted":
        if labels is None:
            raise DataError("label-sorted split needs labels")
        order = np.argsort(np.asarray(labels), kind="stable")
    else:
        raise DataError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    per = n_rows // n_workers
    bounds = [i * per for i in range(n_workers)] + [n_rows]
    return [order[bounds[i]:bounds[i + 1]] for i in range(n_workers)]
