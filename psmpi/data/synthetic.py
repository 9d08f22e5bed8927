"""Seeded synthetic classification data, generated row block by row block.

``synthetic:rows=N,features=D,classes=C,density=P,hetero=H,seed=S``

- labels: row r's class is, with probability H, its *position class*
  floor(r C / N) (so contiguous workers see few classes: H=0 is i.i.d.,
  H=1 sorts the rows by label), otherwise uniform over the C classes;
- features: each of the D entries of a row is present with probability P
  (P=1: dense rows); a present entry j of a row of class c has the value
  (s(c, j) + z) / sqrt(P D), with s(c, j) = +-1 a hash of (seed, c, j) (the
  class signature, never stored) and z ~ N(0, 1).

Labels for all rows come from one cheap stream; the features of rows
[kB, (k+1)B) (B = 1024) come from a stream seeded by (seed, k) alone, so a
worker generates only the blocks holding its rows and gets exactly the rows a
full generation gives.  Nothing of size D is stored, so D = 10^7 works for
bandwidth benchmarks.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .core import DataError, Dataset

BLOCK = 1024
OPTIONS = {"rows": 1000, "features": 50, "classes": 2, "density": 1.0, "hetero": 0.0, "seed": 0}
_INT = ("rows", "features", "classes", "seed")


def parse_spec(spec: str) -> dict:
    opts = dict(OPTIONS)
    body = spec.split(":", 1)[1] if ":" in spec else ""
    for item in filter(None, (s.strip() for s in body.split(","))):
        k, eq, v = item.partition("=")
        k = k.strip()
        if k not in opts:
            raise DataError(f"unknown synthetic option '{k}'; valid: {', '.join(OPTIONS)}")
        if not eq:
            raise DataError(f"synthetic option '{k}' needs a value ({k}=...)")
        try:
            x = float(v)
            if k in _INT:
                if x != int(x):
                    raise ValueError
                x = int(x)
        except (ValueError, OverflowError):
            raise DataError(f"bad value for synthetic option '{k}': {v!r}") from None
        opts[k] = x
    if opts["rows"] < 1 or opts["features"] < 1:
        raise DataError("synthetic: rows and features must be at least 1")
    if opts["features"] > 2 ** 31 - 1:
        raise DataError("synthetic: at most 2^31-1 features")
    if opts["classes"] < 2:
        raise DataError("synthetic: classes must be at least 2")
    if not 0 < opts["density"] <= 1:
        raise DataError(f"synthetic: density must be in (0, 1] (got {opts['density']})")
    if not 0 <= opts["hetero"] <= 1:
        raise DataError(f"synthetic: hetero must be in [0, 1] (got {opts['hetero']})")
    if opts["seed"] < 0:
        raise DataError("synthetic: seed must be >= 0")
    return opts


def _signature(seed: int, cls: np.ndarray, col: np.ndarray) -> np.ndarray:
    """+-1 from a splitmix64 hash of (seed, class, column)."""
    with np.errstate(over="ignore"):
        z = (col.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + cls.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03) + np.uint64(seed) * np.uint64(0x94D049BB133111EB))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.where((z >> np.uint64(63)) == 1, 1.0, -1.0)


class Synthetic(Dataset):
    def __init__(self, spec: str):
        o = parse_spec(spec)
        self.opts = o
        self.name = spec
        self.n_rows, self.n_features = o["rows"], o["features"]
        n, c = self.n_rows, o["classes"]
        rng = np.random.default_rng(np.random.SeedSequence(o["seed"], spawn_key=(0,)))
        by_position = rng.random(n) < o["hetero"]
        random_class = rng.integers(0, c, n)
        position_class = (np.arange(n, dtype=np.int64) * c) // n
        self.labels = np.where(by_position, position_class, random_class).astype(np.float64)
        self.dense = o["density"] >= 1.0
        self.scale = 1.0 / np.sqrt(o["density"] * self.n_features)
        self.nnz = n * self.n_features if self.dense else None

    def expected_nnz(self) -> float:
        return self.n_rows * self.n_features * self.opts["density"]

    def block(self, k: int) -> sp.csr_matrix:
        """Rows [k B, (k+1) B) from the stream of (seed, k) alone."""
        lo = k * BLOCK
        hi = min(self.n_rows, lo + BLOCK)
        m, d = hi - lo, self.n_features
        rng = np.random.default_rng(np.random.SeedSequence(self.opts["seed"], spawn_key=(1, k)))
        y = self.labels[lo:hi].astype(np.int64)
        if self.dense:
            cols = np.tile(np.arange(d, dtype=np.int64), m)
            row_nnz = np.full(m, d, dtype=np.int64)
        else:
            draws = rng.binomial(d, self.opts["density"], size=m)
            owner = np.repeat(np.arange(m, dtype=np.int64), draws)
            key = np.unique(owner * d + rng.integers(0, d, size=len(owner)))  # sorted, duplicates dropped
            owner, cols = np.divmod(key, d)
            row_nnz = np.bincount(owner, minlength=m)
        z = rng.standard_normal(len(cols))
        values = (_signature(self.opts["seed"], np.repeat(y, row_nnz), cols) + z) * self.scale
        indptr = np.concatenate([[0], np.cumsum(row_nnz)])
        return sp.csr_matrix((values, cols, indptr), shape=(m, d))

    def read_rows(self, rows) -> sp.csr_matrix:
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise DataError(f"{self.name}: row index out of range ({self.n_rows} rows)")
        blocks = np.unique(rows // BLOCK)
        if not len(blocks):
            return sp.csr_matrix((0, self.n_features))
        M = sp.vstack([self.block(int(k)) for k in blocks], format="csr")
        first_row = np.concatenate([[0], np.cumsum([min(BLOCK, self.n_rows - k * BLOCK) for k in blocks])])
        local = first_row[np.searchsorted(blocks, rows // BLOCK)] + rows % BLOCK
        return M[local]


def synthetic(spec: str) -> Synthetic:
    return Synthetic(spec)
