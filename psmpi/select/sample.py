"""The fixed stratified sample of x and what it predicts: the candidate
threshold (step 1 of :mod:`psmpi.select`) and the bracket of m_k among the
candidates (step 3)."""
from __future__ import annotations

import functools
import math

import numpy as np

from .order import Z, nan_to_inf

MIN_FAST_D = 1 << 15  # below this the direct exact selection is as fast
SAMPLE = 1 << 16  # sampled positions (at most)
RUN = 32  # consecutive sampled positions (4 cache lines of float64: few TLB misses)
GROUPS = 8  # distinct run offsets: the sample is GROUPS strided views of x
ZB = 2.5  # the half-width of the bracket of m_k among the candidates, in standard deviations
_SEED = 0x70F4  # internal: the sample never depends on a caller's RNG


def sample_size(d: int) -> int:
    """Sampled positions for dimension d >= MIN_FAST_D: a multiple of RUN, at most d / 8."""
    return RUN * (min(SAMPLE, max(4096, d // 16)) // RUN)


@functools.lru_cache(maxsize=8)
def _layout(d: int, s: int):
    """(runs, stratum, offsets) of the sample of ``s`` positions: run j starts
    at j * stratum + offsets[j % GROUPS]."""
    runs = s // RUN
    stratum = d // runs
    offsets = 8 * np.random.Generator(np.random.PCG64(_SEED)).integers(0, (stratum - RUN) // 8 + 1, min(GROUPS, runs))
    return runs, stratum, tuple(int(o) for o in offsets)


@functools.lru_cache(maxsize=8)
def sample_positions(d: int, s: int) -> np.ndarray:
    """``s`` distinct sorted positions in [0, d) (s a multiple of RUN,
    d >= 8 s): runs of RUN consecutive positions, one run per stratum of
    d // (s / RUN), at one of GROUPS offsets drawn from a fixed internal seed
    and aligned to 8 (read-only, cached per (d, s))."""
    runs, stratum, offsets = _layout(d, s)
    j = np.arange(runs, dtype=np.intp)
    start = j * stratum + np.asarray(offsets, dtype=np.intp)[j % len(offsets)]
    pos = (start[:, None] + np.arange(RUN)).ravel()
    pos.flags.writeable = False
    return pos


def gather(x: np.ndarray, s: int, out: np.ndarray) -> np.ndarray:
    """|x| at ``sample_positions(d, s)`` (in another order) into ``out``
    (x an array or a :class:`psmpi.select.candidates.Difference`),
    NaN as +inf.  The runs sharing an offset form one strided view of x,
    so the gather is a few strided copies, not a fancy-indexed take (about
    twice as slow when x is not in cache)."""
    runs, stratum, offsets = _layout(x.shape[0], s)
    g = len(offsets)
    o = 0
    for i, off in enumerate(offsets):
        rows = (runs - i + g - 1) // g
        dst = out[o:o + rows * RUN].reshape(rows, RUN)
        at = (i * stratum + off, rows, g * stratum)
        if isinstance(x, np.ndarray):
            np.abs(_runs(x, *at), out=dst)
        else:  # a Difference a - b: its runs, subtracted in place
            np.abs(np.subtract(_runs(x.a, *at), _runs(x.b, *at), out=dst), out=dst)
        o += rows * RUN
    return nan_to_inf(out)


def _runs(x: np.ndarray, start: int, rows: int, step: int) -> np.ndarray:
    """The ``rows`` runs of RUN entries of ``x`` starting at start, start + step, ... (a view)."""
    st = x.strides[0]
    return np.lib.stride_tricks.as_strided(x[start:], (rows, RUN), (step * st, st), writeable=False)


def lower_rank(s: int, q: float):
    """Rank (from the top) of the sampled magnitude used as the candidate
    threshold for a fraction q: the sample's count above m_k plus Z standard
    deviations; None when that is most of the sample (k too close to d)."""
    r = math.ceil(s * q + Z * math.sqrt(s * q * (1.0 - q))) + 1
    return r if r <= s // 2 else None


def bracket(top: np.ndarray, n: int, k: int, z: float):
    """(u_lo, u_hi): magnitudes believed to bracket the k-th largest of the n
    candidates, from ``top``, the sampled magnitudes at or above the candidate
    threshold (about a uniform sample of the candidates): the k/n quantile of
    ``top`` plus and minus z standard deviations.  ``top`` may be reordered."""
    r = top.shape[0]
    p = k / n
    sd = math.sqrt(r * p * (1.0 - p))
    hi = math.floor(r * p - z * sd)  # u_hi: the hi-th largest of top (+inf if none)
    lo = math.ceil(r * p + z * sd) + 1  # u_lo: the lo-th largest of top (0 if beyond)
    at = [r - j for j in (lo, hi) if 1 <= j <= r]
    if at:
        top.partition(at)
    u_lo = top[r - lo] if lo <= r else top.dtype.type(0)
    u_hi = top[r - hi] if hi >= 1 else top.dtype.type(np.inf)
    return u_lo, u_hi
