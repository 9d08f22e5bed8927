"""Order statistics of in-memory magnitude arrays: the exact selections that
the sampled path of :mod:`psmpi.select` falls back on or finishes with."""
from __future__ import annotations

import math

import numpy as np

Z = 4.5  # half-width of the sampling confidence band, in standard deviations


def nan_to_inf(m: np.ndarray) -> np.ndarray:
    """In place: NaN magnitudes become +inf (NaN ranks as the largest)."""
    if m.size and np.isnan(m.max()):
        m[np.isnan(m)] = np.inf
    return m


def exact(mag: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the canonical top k of ``mag`` (magnitudes, NaN allowed,
    in index order).  ``mag`` may be overwritten."""
    n = mag.shape[0]
    if k >= n:
        return np.ones(n, np.bool_)
    nan_to_inf(mag)
    kth = np.partition(mag, n - k)[n - k]
    sel = mag >= kth
    if np.count_nonzero(sel) != k:  # ties at the k-th magnitude: lowest indices first
        sel = mag > kth
        eq = np.flatnonzero(mag == kth)[: k - np.count_nonzero(sel)]
        sel[eq] = True
    return sel


def largest(a: np.ndarray, r: int) -> np.ndarray:
    """The ``r`` largest entries of ``a`` (1 <= r <= len(a), no NaN), smallest
    first.  ``a`` may be reordered.  A strided sub-sample of ``a`` gives a value
    v with at least r entries >= v (checked, not assumed); only those are
    partitioned, which is several times cheaper than partitioning all of ``a``."""
    m = a.shape[0]
    if m >= 8192 and 2 * r <= m:
        sub = a[::8].copy()
        rs = min(sub.shape[0], math.ceil(r / 8 + Z * math.sqrt(r / 8)) + 1)
        v = np.partition(sub, sub.shape[0] - rs)[sub.shape[0] - rs]
        big = a.take(np.flatnonzero(a >= v))  # (boolean indexing is slower)
        if big.shape[0] >= r:  # the r largest are all >= v
            a = big
            m = a.shape[0]
    a.partition(m - r)
    return a[m - r:]


def rth_largest(a: np.ndarray, r: int):
    """The r-th largest entry of ``a`` (1 <= r <= len(a), no NaN); ``a`` may
    be reordered.  Large arrays: a strided sub-sample brackets it (a
    confidence band of Z standard deviations), only the entries inside the
    bracket are partitioned when the counts show that it lies there (exact
    either way)."""
    m = a.shape[0]
    if m >= 8192:
        sub = a[::16].copy()
        ms = sub.shape[0]
        p = r / m
        sd = math.sqrt(ms * p * (1.0 - p))
        hi, lo = math.floor(ms * p - Z * sd), math.ceil(ms * p + Z * sd) + 1
        if hi >= 1 and lo <= ms:
            sub.partition([ms - lo, ms - hi])
            v_lo, v_hi = sub[ms - lo], sub[ms - hi]
            inside = a <= v_hi
            r2 = r - (m - np.count_nonzero(inside))
            if r2 >= 1:
                np.logical_and(inside, a >= v_lo, out=inside)
                b = a.take(np.flatnonzero(inside))
                if b.shape[0] >= r2:
                    b.partition(b.shape[0] - r2)
                    return b[b.shape[0] - r2]
    a.partition(m - r)
    return a[m - r]
