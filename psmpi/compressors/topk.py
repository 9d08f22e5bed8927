"""TopK: keep the K entries of largest magnitude, exactly, fast.

Which set is returned
---------------------
``top_k_indices(x, k)`` returns the *canonical* top-k set, sorted: every index
whose magnitude is larger than the k-th largest magnitude m_k, plus the
lowest-numbered indices with magnitude exactly m_k until there are k.  NaN
entries rank above every number (as in ``numpy.argpartition``), tied with
infinities.  The set is a pure function of ``x`` and ``k``, whichever path
below computes it, so the serial and MPI runtimes (and the CPU and GPU paths)
agree bit for bit.

How it is fast (numpy only)
---------------------------
``argpartition(abs(x))`` writes a d-sized magnitude array and an index array
and runs introselect over all of d.  Here instead:

1. a fixed stratified sample of ``s`` positions (short runs of consecutive
   positions, one run per stratum of d, at offsets from an internal fixed
   seed, cached per d) gives two order
   statistics of the sampled magnitudes, ``t_lo`` <= m_k <= ``t_hi`` with high
   probability (a binomial confidence band of 4.5 standard deviations);
2. one streaming pass over x in L2-sized chunks computes ``|x|`` into a small
   reused buffer, compares it with ``t_lo`` and appends the candidates (their
   indices and values) to reused buffers: x is read once, nothing of size d
   is written;
3. the exact fix-up runs on the candidates only: those above ``t_hi`` are in
   for sure, the k-th largest magnitude is found by ``numpy.partition`` on
   the few ambiguous ones between the two thresholds, and one boolean
   compaction drops the ambiguous ones that fall short;
4. when the sample misses (fewer than k candidates, or more than k sure ones:
   rare for any input, possible for adversarial ones), the same exact fix-up
   runs on a larger candidate set, at worst on all of x.  Exactness never
   depends on the sample, only the speed does.

The buffers live in a :class:`Workspace`; a :class:`TopK` compressor keeps
one, so from the second round on the pass writes into memory that is
already mapped.  Measured by ``psmpi bench compress`` (BENCHMARKS.md).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..backend import is_device_array
from .base import Compressor, parse_count, register
from .payload import Sparse

CHUNK = 1 << 17  # elements per streaming chunk: the |x| buffer stays in L2
MIN_FAST_D = 1 << 15  # below this the direct exact selection is as fast
SAMPLE = 1 << 16  # sampled positions (at most)
RUN = 32  # consecutive sampled positions (4 cache lines of float64: few TLB misses)
Z = 4.5  # half-width of the sampling confidence band, in standard deviations
_SEED = 0x70F4  # internal: the sample never depends on a caller's RNG


def sample_size(d: int) -> int:
    """Sampled positions for dimension d >= MIN_FAST_D: a multiple of RUN, at most d / 8."""
    return RUN * (min(SAMPLE, max(4096, d // 16)) // RUN)


@functools.lru_cache(maxsize=8)
def sample_positions(d: int, s: int) -> np.ndarray:
    """``s`` distinct sorted positions in [0, d) (s a multiple of RUN,
    d >= 8 s): runs of RUN consecutive positions, one run per stratum of
    d // (s / RUN), at an offset drawn from a fixed internal seed and aligned
    to 8 (read-only, cached per (d, s))."""
    runs = s // RUN
    stratum = d // runs
    offset = 8 * np.random.Generator(np.random.PCG64(_SEED)).integers(0, (stratum - RUN) // 8 + 1, runs)
    start = np.arange(runs, dtype=np.intp) * stratum + offset
    pos = (start[:, None] + np.arange(RUN)).ravel()
    pos.flags.writeable = False
    return pos


def _as_float(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"top-k needs a 1-D vector, got shape {x.shape}")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return x


def _nan_to_inf(m: np.ndarray) -> np.ndarray:
    """In place: NaN magnitudes become +inf (NaN ranks as the largest)."""
    if m.size and np.isnan(m.max()):
        m[np.isnan(m)] = np.inf
    return m


def _exact(mag: np.ndarray, k: int, t_hi=None) -> np.ndarray:
    """Boolean mask of the canonical top k of ``mag`` (the magnitudes, NaN
    allowed, of an increasing candidate list holding the whole top-k set).
    ``mag`` may be overwritten.

    ``t_hi`` (optional, finite) is a magnitude believed to be at or above the
    k-th largest: the entries above it (NaN included: it fails ``<=``) are in
    for sure, only those at or below it are partitioned, and the result is the
    candidate list minus the few of those that fall short.
    """
    n = mag.shape[0]
    if k >= n:
        return np.ones(n, np.bool_)
    if t_hi is not None and np.isfinite(t_hi):
        amb = np.flatnonzero(mag <= t_hi)
        need = k - (n - amb.shape[0])
        if 0 <= need < amb.shape[0]:
            if need == 0:
                drop = amb
            else:
                a = mag.take(amb, mode="clip")
                kth = np.partition(a, a.shape[0] - need)[a.shape[0] - need]
                drop = amb[a < kth]
                excess = n - drop.shape[0] - k  # ties at kth beyond k: drop the highest-numbered
                if excess:
                    ties = amb[a == kth]
                    drop = np.sort(np.concatenate([drop, ties[ties.shape[0] - excess:]]))
            keep = np.ones(n, np.bool_)
            keep[drop] = False
            return keep
    _nan_to_inf(mag)
    kth = np.partition(mag, n - k)[n - k]
    sel = mag >= kth
    if np.count_nonzero(sel) != k:  # ties at the k-th magnitude: lowest indices first
        sel = mag > kth
        eq = np.flatnonzero(mag == kth)[: k - np.count_nonzero(sel)]
        sel[eq] = True
    return sel


class Workspace:
    """Reusable buffers of the streaming pass (the chunk's |x| and mask) and of
    the candidate list, so that repeated calls (one per round) write into
    memory that is already mapped.  A :class:`TopK` compressor owns one."""

    def __init__(self):
        self.ab = self.mask = self.idx = self.val = self.mag = self.out = None

    def cast(self, v, dtype):
        """``v`` converted to ``dtype`` in a reused buffer."""
        if self.out is None or self.out.dtype != dtype or self.out.shape[0] < v.shape[0]:
            self.out = np.empty(max(v.shape[0], 0 if self.idx is None else self.idx.shape[0]), dtype)
        out = self.out[:v.shape[0]]
        np.copyto(out, v, casting="unsafe")
        return out

    def chunk(self, dtype, b):
        if self.ab is None or self.ab.dtype != dtype or self.ab.shape[0] < b:
            self.ab = np.empty(b, dtype)
            self.mask = np.empty(b, np.bool_)
        return self.ab, self.mask

    def lists(self, dtype, cap):
        """Candidate index/value/magnitude buffers holding at least ``cap``."""
        if self.idx is None or self.idx.shape[0] < cap or self.val.dtype != dtype:
            old = 0 if self.idx is None or self.val.dtype != dtype else self.idx.shape[0]
            cap = max(cap, old + old // 2)
            idx, val = np.empty(cap, np.intp), np.empty(cap, dtype)
            if old:
                idx[:old], val[:old] = self.idx, self.val
            self.idx, self.val, self.mag = idx, val, np.empty(cap, dtype)
        return self.idx, self.val


def _candidates(x: np.ndarray, t, ws: Workspace, expect: int) -> int:
    """Collect the indices i with not(|x_i| < t) (NaN is in) and the values
    x_i into ``ws.idx[:n]`` and ``ws.val[:n]``, in one chunked pass that reads
    x once and writes nothing of size d; returns n."""
    d = x.shape[0]
    b = min(CHUNK, d)
    ab, m = ws.chunk(x.dtype, b)
    ab, m = ab[:b], m[:b]
    idx, val = ws.lists(x.dtype, expect)
    t = x.dtype.type(t)
    pos = 0
    for start in range(0, d, b):
        xc = x[start:start + b]
        n = xc.shape[0]
        a, mm = (ab, m) if n == b else (ab[:n], m[:n])
        np.abs(xc, out=a)
        np.less(a, t, out=mm)
        np.logical_not(mm, out=mm)
        li = mm.nonzero()[0]
        c = li.shape[0]
        if c:
            if pos + c > idx.shape[0]:
                idx, val = ws.lists(x.dtype, pos + c + (d - start) // 8)
            np.take(xc, li, out=val[pos:pos + c], mode="clip")  # 'clip': no buffering
            np.add(li, start, out=idx[pos:pos + c])
            pos += c
    return pos


def _thresholds(x: np.ndarray, k: int):
    """(t_lo, t_hi, n, lower) from the sample: t_lo <= m_k <= t_hi with high
    probability, n about the number of entries at or above t_lo, and
    ``lower()`` a smaller threshold to retry with if t_lo turns out too high.
    t_lo is None when the sample cannot help (k too close to d)."""
    d = x.shape[0]
    s = sample_size(d)
    sm = _nan_to_inf(np.abs(x.take(sample_positions(d, s))))
    q = k / d
    mu = s * q
    sd = math.sqrt(mu * (1.0 - q))
    r_lo = math.ceil(mu + Z * sd) + 1  # the r-th largest sampled magnitude
    r_hi = math.floor(mu - Z * sd)
    if r_lo > s // 2:  # most entries are selected: candidates would be most of x
        return None, None, 0, None
    sm.partition(s - r_lo)  # in place; the r_lo largest now sit at the end
    t_lo = sm[s - r_lo]
    t_hi = None
    if r_hi >= 1:
        top = sm[s - r_lo:]
        top.partition(r_lo - r_hi)  # only the few above t_lo
        t_hi = top[r_lo - r_hi]
    expect = int(d * (r_lo + 3 * math.sqrt(r_lo)) / s) + 1024

    def lower():
        """The (4 r_lo)-th largest sampled magnitude (None: the whole sample)."""
        r2 = 4 * r_lo + 64
        if r2 > s // 2:
            return None
        rest = sm[: s - r_lo]  # the entries below t_lo
        rest.partition(s - r2)
        return rest[s - r2]

    return t_lo, t_hi, expect, lower


def top_k(x: np.ndarray, k: int, ws: Workspace | None = None, value_dtype=None):
    """(indices, values): the canonical top-k set of ``x`` (sorted indices) and
    ``x`` at those indices, converted to ``value_dtype`` when given.  ``ws``
    (optional) is reused across calls.  CuPy arrays stay on the device."""
    if not isinstance(x, np.ndarray) and is_device_array(x):
        from ..kernels import top_k_device

        idx = top_k_device(x, k)
        vals = x[idx]
        return idx, vals if value_dtype is None else vals.astype(value_dtype)
    x = _as_float(x)
    d = x.shape[0]
    k = max(0, min(int(k), d))
    vdt = x.dtype if value_dtype is None else np.dtype(value_dtype)
    if k == d:
        sel = np.arange(d)
    elif d < MIN_FAST_D and k == 1:  # the first index of the largest magnitude
        sel = np.array([np.argmax(_nan_to_inf(np.abs(x)))])
    elif k == 0:
        sel = np.empty(0, np.intp)
    else:
        sel = None
        if d >= MIN_FAST_D:
            t_lo, t_hi, expect, lower = _thresholds(x, k)
            if t_lo is not None:
                ws = Workspace() if ws is None else ws
                n = _candidates(x, t_lo, ws, expect)
                if n < k:  # the sample missed high: one more pass with a lower threshold
                    t_lo = lower()
                    n = _candidates(x, t_lo, ws, 4 * expect) if t_lo is not None else -1
                if n >= k:  # the sample did not miss: the top k are all candidates
                    cand, vals = ws.idx[:n], ws.val[:n]
                    keep = _exact(np.abs(vals, out=ws.mag[:n]), k, t_hi)
                    if vdt != vals.dtype:  # cast in reused memory, then compact once
                        vals = ws.cast(vals, vdt)
                    return cand[keep], vals[keep]
        if sel is None:
            keep = _exact(np.abs(x), k)  # direct exact selection over all of x
            return np.flatnonzero(keep), x[keep].astype(vdt, copy=False)
    return sel, x.take(sel, mode="clip").astype(vdt, copy=False)


def top_k_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k entries of largest magnitude (canonical ties:
    lowest indices first; see the module docstring)."""
    return top_k(x, k)[0]


@register
class TopK(Compressor):
    """Greedy sparsification: keep the K largest |x_j|. Contractive, alpha = K/d."""

    name = "topk"
    takes_param = True

    def setup(self, param):
        self.k = parse_count(self.name, param, self.d)
        self._ws = None  # buffers reused from round to round

    @property
    def alpha(self):
        return self.k / self.d

    def compress(self, x, rng):
        if self._ws is None:
            self._ws = Workspace()
        direct = self.scale == 1.0  # values straight into the wire dtype, no extra copy
        idx, vals = top_k(x, self.k, self._ws, self.value_dtype if direct else None)
        if not isinstance(idx, np.ndarray):  # device arrays: only K indices and values cross to the host
            from ..backend import to_numpy

            idx, vals = to_numpy(idx), to_numpy(vals)
        return Sparse(self.d, idx, vals if direct else self.wire_values(vals))
