"""Splitting rows across workers; every rank computes the same split alone.

A split is a pure function of (number of rows, number of workers, split name,
seed, labels), so each MPI rank computes it without communication and reads
only its own rows.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("contiguous", "shuffle", "label-sorted", "dirichlet:ALPHA")


def _error(msg):
    from .core import DataError

    return DataError(msg)


def _valid():
    return ", ".join(SPLITS)


def parse_split(split: str) -> tuple[str, float | None]:
    """'dirichlet:0.3' -> ('dirichlet', 0.3); 'shuffle' -> ('shuffle', None)."""
    s = str(split).strip().lower()
    kind, sep, param = s.partition(":")
    if kind in ("contiguous", "shuffle", "label-sorted") and not sep:
        return kind, None
    if kind == "dirichlet":
        try:
            alpha = float(param)
        except ValueError:
            raise _error(f"split '{split}' needs a concentration ALPHA > 0, e.g. dirichlet:0.5") from None
        if not (alpha > 0 and np.isfinite(alpha)):
            raise _error(f"split '{split}': ALPHA must be a positive number (got {param})")
        return kind, alpha
    raise _error(f"unknown split '{split}'; valid: {_valid()}")


def check_split(split: str) -> None:
    """Raise DataError unless ``split`` names a known split."""
    parse_split(split)


HOLD_OUT_KEY = 6  # the stream of --test-fraction's draw (3: shuffle, 4: dirichlet, 5: label-sorted)
EVAL_ROWS_KEY = 7  # the streams of --eval-rows' subsets: (7, i) for worker i, (8,) for the test set


def _rng(seed: int, *key: int) -> np.random.Generator:
    """The stream (seed, key...) of one of the draws above."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def eval_share(total: int, n_workers: int, index: int) -> int:
    """Worker ``index``'s part of ``total`` evaluation rows: total // n, one more for the
    first total % n workers."""
    q, r = divmod(int(total), int(n_workers))
    return q + (1 if index < r else 0)


def eval_subset(n_rows: int, m: int, seed: int, index: int | None = None) -> np.ndarray:
    """``m`` of ``n_rows`` rows (sorted, drawn without replacement) for evaluations, from
    the stream (seed, 7, index) of worker ``index`` alone, or (seed, 8) for the test set
    (``index`` None): the subset does not depend on which process holds the rows."""
    rng = _rng(seed, EVAL_ROWS_KEY + 1) if index is None else _rng(seed, EVAL_ROWS_KEY, int(index))
    return np.sort(rng.choice(int(n_rows), size=int(m), replace=False))


def chunk_sizes(n_rows: int, n_workers: int) -> np.ndarray:
    """floor(N/n) rows each, the remainder to the last worker."""
    per = n_rows // n_workers
    sizes = np.full(n_workers, per, dtype=np.int64)
    sizes[-1] += n_rows - per * n_workers
    return sizes


def _chunks(order: np.ndarray, n_workers: int) -> list[np.ndarray]:
    bounds = np.concatenate([[0], np.cumsum(chunk_sizes(len(order), n_workers))])
    return [order[bounds[i]:bounds[i + 1]] for i in range(n_workers)]


def _round_to(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainders)."""
    raw = total * weights / weights.sum()
    out = np.floor(raw).astype(np.int64)
    short = total - int(out.sum())
    if short > 0:
        out[np.argsort(-(raw - out), kind="stable")[:short]] += 1
    return out


def dirichlet_counts(y: np.ndarray, n_workers: int, alpha: float, seed: int) -> np.ndarray:
    """(workers x classes) row counts: equal worker sizes as ``contiguous``, and
    worker i's label mix drawn from Dirichlet(alpha * global label frequencies).

    Workers are filled in a seeded random order; a worker whose draw asks for
    more rows of a class than remain takes the rest from its next most likely
    classes.  Large alpha -> every worker near the global mix (like shuffle);
    small alpha -> each worker holds mostly one label.
    """
    n_classes = int(y.max()) + 1 if len(y) else 0
    avail = np.bincount(y, minlength=n_classes).astype(np.int64)
    prior = avail / avail.sum()
    sizes = chunk_sizes(len(y), n_workers)
    rng = _rng(seed, 4)
    counts = np.zeros((n_workers, n_classes), dtype=np.int64)
    for j in rng.permutation(n_workers):
        q = rng.dirichlet(alpha * prior)
        if not np.all(np.isfinite(q)) or q.sum() <= 0:  # underflow at tiny alpha: all mass on one class
            q = np.zeros(n_classes)
            q[rng.choice(n_classes, p=prior)] = 1.0
        take = np.minimum(_round_to(int(sizes[j]), q), avail)
        short = int(sizes[j] - take.sum())
        for k in np.argsort(-q, kind="stable"):
            if short == 0:
                break
            extra = min(short, int(avail[k] - take[k]))
            take[k] += extra
            short -= extra
        counts[j] = take
        avail -= take
    return counts


def _dirichlet(labels, n_workers: int, alpha: float, seed: int) -> list[np.ndarray]:
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    y = y.ravel()
    counts = dirichlet_counts(y, n_workers, alpha, seed)
    rng = _rng(seed, 5)
    by_class = np.argsort(y, kind="stable")
    class_bounds = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=counts.shape[1]))])
    parts = [[] for _ in range(n_workers)]
    for k in range(counts.shape[1]):
        pool = rng.permutation(by_class[class_bounds[k]:class_bounds[k + 1]])
        cuts = np.concatenate([[0], np.cumsum(counts[:, k])])
        for i in range(n_workers):
            if cuts[i + 1] > cuts[i]:
                parts[i].append(pool[cuts[i]:cuts[i + 1]])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def split_rows(n_rows: int, n_workers: int, split: str = "contiguous", seed: int = 0, labels=None) -> list[np.ndarray]:
    """Row indices of each worker.

    ``contiguous``: file order, floor(N/n) rows each, the remainder to the last
    worker (as the EF21 papers' code splits data).  ``shuffle``: a seeded
    permutation, then contiguous.  ``label-sorted``: stable sort by label, then
    contiguous (heterogeneous workers).  ``dirichlet:ALPHA``: contiguous sizes,
    each worker's label mix drawn from Dirichlet(ALPHA x global label
    frequencies) (see :func:`dirichlet_counts`); rows in file order.
    """
    kind, alpha = parse_split(split)
    n_rows, n_workers = int(n_rows), int(n_workers)
    if n_workers < 1:
        raise _error("the number of workers must be at least 1")
    if n_workers > n_rows:
        raise _error(f"cannot split {n_rows} rows across {n_workers} workers (more workers than rows)")
    if kind in ("label-sorted", "dirichlet"):
        if labels is None:
            raise _error(f"the {kind} split needs labels")
        if len(labels) != n_rows:
            raise _error(f"{len(labels)} labels for {n_rows} rows")
    if kind == "contiguous":
        return _chunks(np.arange(n_rows), n_workers)
    if kind == "shuffle":
        return _chunks(_rng(seed, 3).permutation(n_rows), n_workers)
    if kind == "label-sorted":
        return _chunks(np.argsort(np.asarray(labels), kind="stable"), n_workers)
    return _dirichlet(labels, n_workers, alpha, seed)
