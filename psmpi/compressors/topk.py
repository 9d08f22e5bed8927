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
   positions, one run per stratum of d, at one of a few offsets from an
   internal fixed seed; gathered through a few strided views of x) gives the
   candidate threshold ``t_lo``, an order statistic of the sampled
   magnitudes with ``t_lo <= m_k`` with high probability (a binomial
   confidence band of ``Z`` = 4.5 standard deviations);
2. one streaming pass over x in chunks flags ``not(|x| < t_lo)``
   (as ``(x < t_lo) <= (x <= -t_lo)`` on booleans: no |x| is written), turns
   the flags into positions with ``nonzero`` (the mask padded with set
   entries when 4-10 % are set: there numpy's sparse path, ~12 ns per hit,
   is slower than its dense one, ~0.4 ns per entry) and appends the
   candidates' indices and values to reused buffers: x is read once,
   nothing of size d is written;
3. the k-th largest magnitude m_k of the n candidates is found without
   partitioning them: the sampled magnitudes above ``t_lo`` are about a
   uniform sample of the candidates, so their k/n quantile, plus and minus
   ``ZB`` standard deviations, brackets m_k.  One blockwise scan of the
   candidates counts those above the bracket and collects the few inside,
   and m_k is the right order statistic of these (found by partitioning a
   sub-sample first, then the entries between two of its order statistics).
   The scan also leaves the flags of the entries above the bracket, to
   which those inside it and not below m_k are added, so the final
   compaction into the two returned arrays (values converted to the wire
   dtype on the way) reads each candidate once more, block by block;
4. whenever a guess misses -- fewer than k candidates (one more pass with a
   lower threshold, then the direct selection over all of x), m_k outside
   the bracket (a bracket twice as wide, then a partition of all
   candidates), an order statistic of a sub-sample off -- the counts show
   it and a slower exact step runs instead.  Exactness never depends on the
   sample, only the speed does: for any input, adversarial ones included
   (all-equal, many ties, NaN/inf, k near d).

Threads: from ``PAR_MIN_D`` entries on, with ``psmpi.parallel.threads()`` > 1,
x is split into contiguous parts (at least ``PAR_MIN_PART`` entries each), and
step 2 runs on one thread per part (numpy's comparisons, ``nonzero`` and
``take`` release the GIL), each into its own candidate list; the lists stay
apart (no copy joins them): the scan of step 3 and the compaction run on one
thread per list too, each list into its own range of the two returned
arrays.  Everything decided from the counts (the threshold, the bracket, m_k,
which ties are kept) is decided on all candidates together, in index order,
so the result is bit for bit the one of a single thread, whatever the count.
Called on a thread of that pool (inside ``run_all``), TopK stays on it.

Top-1 of a short vector (d < ``MIN_FAST_D``, the common EF21 case) takes a
shorter way in :meth:`TopK.compress`: one ``argmax`` of |x| (the first
index of the largest magnitude), the general code only when that magnitude
is NaN, infinite or beyond the wire dtype.

The buffers live in a :class:`Workspace`; a :class:`TopK` compressor keeps
one, so from the second round on the pass writes into memory that is
already mapped.  The two returned arrays are new, or the previous call's
when nothing but the workspace refers to them any more (see
:class:`Workspace`): a caller never sees a result it holds change.
Measured by ``psmpi bench compress`` (BENCHMARKS.md).
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

from .. import parallel
from ..backend import device_of, is_device_array
from .base import Compressor, parse_count, register
from .payload import Sparse

CHUNK = 1 << 18  # elements per streaming chunk of x (its masks stay in L2, the chunk in L3)
KBLOCK = 1 << 17  # candidates per block of the scan for m_k (its magnitudes and flags stay in cache)
BLOCK = 1 << 17  # candidates per block of the final compaction (its positions and values stay in cache)
MIN_FAST_D = 1 << 15  # below this the direct exact selection is as fast
PAR_MIN_D = 1 << 20  # from this size on the pass, the scan and the compaction run on parallel.threads() threads
PAR_MIN_PART = 1 << 19  # elements of x per thread, at least
SAMPLE = 1 << 16  # sampled positions (at most)
RUN = 32  # consecutive sampled positions (4 cache lines of float64: few TLB misses)
GROUPS = 8  # distinct run offsets: the sample is GROUPS strided views of x
Z = 4.5  # half-width of the sampling confidence band, in standard deviations
ZB = 2.5  # the same for the bracket of m_k among the candidates
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


def _sample(x: np.ndarray, s: int, out: np.ndarray) -> np.ndarray:
    """|x| at ``sample_positions(d, s)`` (in another order) into ``out``,
    NaN as +inf.  The runs sharing an offset form one strided view of x,
    so the gather is a few strided copies, not a fancy-indexed take (about
    twice as slow when x is not in cache)."""
    runs, stratum, offsets = _layout(x.shape[0], s)
    g = len(offsets)
    st = x.strides[0]
    o = 0
    for i, off in enumerate(offsets):
        rows = (runs - i + g - 1) // g
        view = np.lib.stride_tricks.as_strided(x[i * stratum + off:], (rows, RUN), (g * stratum * st, st), writeable=False)
        np.abs(view, out=out[o:o + rows * RUN].reshape(rows, RUN))
        o += rows * RUN
    return _nan_to_inf(out)


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


def _exact(mag: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the canonical top k of ``mag`` (magnitudes, NaN allowed,
    in index order).  ``mag`` may be overwritten."""
    n = mag.shape[0]
    if k >= n:
        return np.ones(n, np.bool_)
    _nan_to_inf(mag)
    kth = np.partition(mag, n - k)[n - k]
    sel = mag >= kth
    if np.count_nonzero(sel) != k:  # ties at the k-th magnitude: lowest indices first
        sel = mag > kth
        eq = np.flatnonzero(mag == kth)[: k - np.count_nonzero(sel)]
        sel[eq] = True
    return sel


def _largest(a: np.ndarray, r: int) -> np.ndarray:
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


def _rth_largest(a: np.ndarray, r: int):
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


def _refs(obj, name: str) -> int:
    return sys.getrefcount(getattr(obj, name))


class _Probe:
    held = np.empty(1)


# the reference count of an array that only an attribute holds (-1: no reference counts, no reuse)
_SOLE = _refs(_Probe, "held") if hasattr(sys, "getrefcount") else -1


class Workspace:
    """Reusable buffers: the chunk masks, the sample, the candidate list
    (indices, values, flags) and the blocks of the scans over it, so that
    repeated calls (one per round) write into memory that is already mapped;
    one more workspace per extra thread (:meth:`parts`).  A :class:`TopK`
    compressor owns one (not to be shared by concurrent calls).

    The two arrays a call returns are new, or the ones the previous call
    returned when nothing but this workspace refers to them any more (the
    caller dropped them, and with them every view, buffer export or pending
    send, each of which holds a reference; weak references aside): no caller
    can see them change.
    Then a call allocates nothing large (fresh large arrays cost page faults
    when the allocator has handed their memory back to the system)."""

    def __init__(self):
        self.m1 = self.m2 = self.smp = self.mb = self.f1 = self.cv = self.idx = self.val = self.flag = None
        self.oi = self.ov = None
        self.more = []  # the workspaces of the other threads' parts (their masks, lists and blocks)
        self.cands = None  # the last pass's candidate list (:class:`Candidates`)

    def parts(self, p: int) -> list:
        """``p`` workspaces, this one first, one per thread of a threaded call."""
        while len(self.more) < p - 1:
            self.more.append(Workspace())
        return [self] + self.more[:p - 1]

    def outputs(self, k: int, vdt):
        """Arrays for the k indices and values (``vdt``) of this call's result."""
        for name, dtype in (("oi", np.dtype(np.intp)), ("ov", vdt)):
            sole = _SOLE > 0 and _refs(self, name) == _SOLE  # (counted before this frame takes a reference)
            a = getattr(self, name)
            if not (sole and a is not None and a.shape == (k,) and a.dtype == dtype and a.flags.writeable):
                setattr(self, name, np.empty(k, dtype))
            del a
        return self.oi, self.ov

    def masks(self, b):
        if self.m1 is None or self.m1.shape[0] < b:
            self.m1, self.m2 = np.empty(b, np.bool_), np.empty(b, np.bool_)
        return self.m1[:b], self.m2[:b]

    def sample(self, dtype, s):
        if self.smp is None or self.smp.dtype != dtype or self.smp.shape[0] < s:
            self.smp = np.empty(s, dtype)
        return self.smp[:s]

    def converted(self, dtype, b):
        """A block of ``b`` values converted to the wire dtype."""
        if self.cv is None or self.cv.dtype != dtype or self.cv.shape[0] < b:
            self.cv = np.empty(b, dtype)
        return self.cv

    def scratch(self, dtype, b):
        """A magnitude block and a flag block of ``b`` entries."""
        if self.mb is None or self.mb.dtype != dtype or self.mb.shape[0] < b:
            self.mb, self.f1 = np.empty(b, dtype), np.empty(b, np.bool_)
        return self.mb, self.f1

    def lists(self, dtype, cap, keep=0):
        """Candidate index and value buffers holding at least ``cap``, the
        first ``keep`` entries preserved."""
        if self.idx is None or self.idx.shape[0] < cap or self.val.dtype != dtype:
            same = self.idx is not None and self.val.dtype == dtype
            cap = max(cap, self.idx.shape[0] * 3 // 2 if same else 0)
            idx, val = np.empty(cap, np.intp), np.empty(cap, dtype)
            if keep:
                idx[:keep], val[:keep] = self.idx[:keep], self.val[:keep]
            self.idx, self.val, self.flag = idx, val, np.empty(cap, np.bool_)
        return self.idx, self.val


def _pad(b: int, q: float) -> int:
    """True entries to append to a chunk mask of b entries of which about a
    fraction q is set, so that ``nonzero`` sees more than 10 % set (if about
    0.9 q is): below that numpy takes a path that costs about 12 ns per hit
    instead of about 0.4 ns per entry, the better one only below ~4 %."""
    return int((0.1 - 0.9 * q) * b / 0.9) + 64 if 0.04 <= q < 0.1 / 0.9 else 0


def _parts(d: int) -> list:
    """The contiguous (start, stop) ranges of x, one per thread: one range
    below PAR_MIN_D or with one thread (see :mod:`psmpi.parallel`).  Only
    the speed depends on them: every thread does on its range what one
    thread would do there, and the results are joined in index order."""
    if d < PAR_MIN_D or parallel.on_pool_thread():
        return [(0, d)]  # (on a thread of the pool, run_all would run the parts one after another)
    p = min(parallel.threads(), d // PAR_MIN_PART)
    return parallel.chunks(d, p) if p > 1 else [(0, d)]


class Candidates:
    """The candidate list of the last pass: one segment per thread's range
    of x, in index order -- ``idx[j]``, ``val[j]`` and the flag buffer
    ``flag[j]`` of the workspace ``ws.parts(...)[j]`` -- starting at
    ``starts[j]`` of the list they form together; ``shape``: (its length,).
    (Views of the buffers only: no reference back to a workspace.)"""

    def __init__(self, wss: list, counts: list):
        self.counts = counts
        if len(wss) == 1:
            w, c = wss[0], counts[0]
            self.idx, self.val, self.flag, self.starts = [w.idx[:c]], [w.val[:c]], [w.flag[:c]], [0]
        else:
            self.idx = [w.idx[:c] for w, c in zip(wss, counts)]
            self.val = [w.val[:c] for w, c in zip(wss, counts)]
            self.flag = [w.flag[:c] for w, c in zip(wss, counts)]
            self.starts = [0]
            for c in counts[:-1]:
                self.starts.append(self.starts[-1] + c)
        self.shape = (self.starts[-1] + counts[-1],)


def _pass(x: np.ndarray, lo: int, hi: int, t, ws: Workspace, cap: int, q: float) -> int:
    """The pass of :func:`_candidates` over ``x[lo:hi]``, into ``ws``'s lists
    (positions in x); returns their length."""
    b = min(CHUNK, hi - lo)
    pad = _pad(b, q)
    m1, m2 = ws.masks(b + pad)
    m1[b:] = True
    idx, val = ws.lists(x.dtype, cap)
    nt = -t
    pos = 0
    for start in range(lo, hi, b):
        xc = x[start:min(start + b, hi)]
        n = xc.shape[0]
        a, c2 = (m1[:b], m2[:b]) if n == b else (m1[:n], m2[:n])
        np.less(xc, t, out=a)
        np.less_equal(xc, nt, out=c2)
        np.less_equal(a, c2, out=a)
        if pad:
            m1[n:n + pad] = True
            li = m1[:n + pad].nonzero()[0]
            li = li[:li.shape[0] - pad]
        else:
            li = a.nonzero()[0]
        c = li.shape[0]
        if c:
            if pos + c > idx.shape[0]:
                idx, val = ws.lists(x.dtype, pos + c + (hi - start) // 8, keep=pos)
            np.take(xc, li, out=val[pos:pos + c], mode="wrap")  # (not 'raise': that buffers)
            np.add(li, start, out=idx[pos:pos + c])
            pos += c
    return pos


def _candidates(x: np.ndarray, t, ws: Workspace, cap: int, q: float = 0.0) -> int:
    """Collect the indices i with not(|x_i| < t) (NaN is in) and the values
    x_i, in order, into the lists of ``ws`` (``ws.idx[:n]`` and ``ws.val[:n]``
    with one thread; ``ws.cands``, a :class:`Candidates`, either way), in
    one chunked pass that reads x once and writes nothing of size d; returns
    n.  ``q``: the expected fraction of such i (see :func:`_pad`).  Large x:
    each thread passes over one contiguous range of x (:func:`_parts`), into
    its own lists.

    The chunk's mask is ``(x < t) <= (x <= -t)`` (on booleans: not(x < t) or
    x <= -t), which is |x| >= t or NaN for t >= 0 without writing |x|."""
    d = x.shape[0]
    t = x.dtype.type(t)
    parts = _parts(d)
    if len(parts) == 1:
        wss, counts = [ws], [_pass(x, 0, d, t, ws, cap, q)]
    else:
        wss = ws.parts(len(parts))

        def part(j):
            lo, hi = parts[j]
            return _pass(x, lo, hi, t, wss[j], cap * (hi - lo) // d + 1024, q)

        counts = parallel.run_all(part, range(len(parts)))
    ws.cands = Candidates(wss, counts)
    return ws.cands.shape[0]


def _lower_rank(s: int, q: float):
    """Rank (from the top) of the sampled magnitude used as the candidate
    threshold for a fraction q: the sample's count above m_k plus Z standard
    deviations; None when that is most of the sample (k too close to d)."""
    r = math.ceil(s * q + Z * math.sqrt(s * q * (1.0 - q))) + 1
    return r if r <= s // 2 else None


def _bracket(top: np.ndarray, n: int, k: int, z: float):
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


def _scan(val: np.ndarray, u_lo, u_hi, ws: Workspace):
    """:func:`_in_bracket` for one segment ``val`` of the list, with the
    flag buffer and blocks of ``ws``: (above, mid, pos, low), ``pos`` in
    the segment."""
    n = val.shape[0]
    mb, f2 = ws.scratch(val.dtype, KBLOCK)
    low = ws.flag[:n]
    above = 0
    mids, poss = [], []
    for b0 in range((n - 1) // KBLOCK * KBLOCK, -1, -KBLOCK):
        v = val[b0:b0 + KBLOCK]
        c = v.shape[0]
        m, a = np.abs(v, out=mb[:c]), low[b0:b0 + c]
        np.less_equal(m, u_hi, out=a)
        above += c - np.count_nonzero(a)  # NaN fails '<='
        if u_lo > 0:
            a = np.logical_and(a, np.greater_equal(m, u_lo, out=f2[:c]), out=f2[:c])
        p = np.flatnonzero(a)
        mids.append(m.take(p, mode="wrap"))  # (boolean indexing is slower)
        poss.append(p + b0)
    if not mids:  # an empty segment
        return 0, val[:0].copy(), np.empty(0, np.intp), low
    if len(mids) == 1:
        return above, mids[0], poss[0], low
    return above, np.concatenate(mids[::-1]), np.concatenate(poss[::-1]), low


def _in_bracket(cands: Candidates, u_lo, u_hi, ws: Workspace):
    """(above, mid, pos, lows, aboves) for the candidate list and the
    bracket [u_lo, u_hi] of magnitudes: the number of candidates above it
    (NaN included), the magnitudes of those inside it and their positions in
    the list, the flags ``lows[j]`` (in the workspaces) of the candidates of
    segment j not above it, and the number above it of each segment.  Block
    by block, each block's magnitudes and flags staying in cache, the last
    block first (the most recently written, the likeliest still in cache;
    the compaction then starts with the blocks read last); one thread per
    segment."""
    if len(cands.val) == 1:
        above, mid, pos, low = _scan(cands.val[0], u_lo, u_hi, ws)
        return above, mid, pos, [low], [above]
    wss = ws.parts(len(cands.val))
    out = parallel.run_all(lambda j: _scan(cands.val[j], u_lo, u_hi, wss[j]), range(len(cands.val)))
    aboves = [o[0] for o in out]
    mid = np.concatenate([o[1] for o in out])
    pos = np.concatenate([o[2] + s for o, s in zip(out, cands.starts)])
    return sum(aboves), mid, pos, [o[3] for o in out], aboves


def _keep(cands: Candidates, k: int, top, ws: Workspace) -> list:
    """[(flags, count)] per segment of the list: the flags of the canonical
    top k among the n > k candidates and how many of them are set.  m_k,
    the k-th largest magnitude, is looked for between the two magnitudes of
    :func:`_bracket`: when the counts show that it lies there, only the
    magnitudes inside are partitioned (:func:`_rth_largest`), and the flags
    are those above the bracket plus those inside not below m_k (ties at
    m_k: the lowest positions); else a bracket twice as wide is tried, else
    all magnitudes are partitioned."""
    n = cands.shape[0]
    if top.shape[0]:
        for z in (ZB, 2 * ZB):
            above, mid, pos, lows, aboves = _in_bracket(cands, *_bracket(top, n, k, z), ws)
            need, m = k - above, mid.shape[0]
            if 1 <= need <= m:  # m_k lies in the bracket: it is the need-th largest there
                kth = _rth_largest(mid.copy(), need)
                if kth == np.inf:  # NaN (counted above the bracket) ties with it: the general way below
                    break
                sel = mid > kth
                ties = np.flatnonzero(mid == kth)
                sel[ties[:need - np.count_nonzero(sel)]] = True
                inside = pos[sel]  # (increasing)
                if len(lows) == 1:
                    keep = np.logical_not(lows[0], out=lows[0])  # above the bracket (NaN included) ...
                    keep[inside] = True  # ... or inside it and among the top k
                    return [(keep, k)]
                cut = np.searchsorted(inside, cands.starts[1:] + [n])
                out, c0 = [], 0
                for low, a, s, c1 in zip(lows, aboves, cands.starts, cut.tolist()):
                    keep = np.logical_not(low, out=low)  # above the bracket (NaN included) ...
                    keep[inside[c0:c1] - s] = True  # ... or inside it and among the top k
                    out.append((keep, a + c1 - c0))
                    c0 = c1
                return out
    one = len(cands.val) == 1
    mag = _nan_to_inf(np.abs(cands.val[0] if one else np.concatenate(cands.val)))
    kth = np.partition(mag, n - k)[n - k]
    keep = np.greater(mag, kth, out=cands.flag[0] if one else None)
    ties = np.flatnonzero(mag == kth)
    keep[ties[:k - np.count_nonzero(keep)]] = True
    segs = [keep[s:s + c] for s, c in zip(cands.starts, cands.counts)]
    return [(f, int(np.count_nonzero(f))) for f in segs]


def _sampled(x: np.ndarray, k: int, vdt, ws: Workspace):
    """Steps 1-4 of the module docstring: (indices, values as ``vdt``), or
    None when the sample cannot help or missed twice (the caller then runs the
    direct exact selection)."""
    d = x.shape[0]
    s = sample_size(d)
    r = _lower_rank(s, k / d)
    if r is None:
        return None
    sm = _sample(x, s, ws.sample(x.dtype, s))
    top = _largest(sm, r)
    cap = int(d * (r + 3 * math.sqrt(r)) / s) + 1024  # rarely exceeded: then the lists grow
    n = _candidates(x, top[0], ws, cap, r / s)
    if n < k:  # the sample missed high: one more pass with a lower threshold
        r = 4 * r + 64
        if r > s // 2:
            return None
        top = _largest(sm, r)
        n = _candidates(x, top[0], ws, 4 * cap, r / s)
        if n < k:
            return None
    cands = ws.cands
    keeps = None if n == k else _keep(cands, k, top, ws)
    return _compact(cands, keeps, k, vdt, ws)


def _compact_part(idx, val, keep, oi, ov, ws: Workspace):
    """The entries of ``idx`` and ``val`` flagged in ``keep`` (all when it
    is None), in order, into ``oi`` and ``ov``; block by block, so that each
    block's positions and values stay in cache."""
    g = None if ov.dtype == val.dtype else ws.converted(ov.dtype, BLOCK)
    o = 0
    with np.errstate(over="ignore"):  # like Compressor.wire_values: an overflow becomes inf (per thread)
        for b0 in range(0, val.shape[0], BLOCK):
            v = val[b0:b0 + BLOCK]
            if keep is None:
                e = o + v.shape[0]
                oi[o:e] = idx[b0:b0 + BLOCK]
                ov[o:e] = v
            else:
                kp = np.flatnonzero(keep[b0:b0 + BLOCK])
                e = o + kp.shape[0]
                np.take(idx[b0:b0 + BLOCK], kp, out=oi[o:e], mode="wrap")  # (not 'raise': that buffers)
                if g is not None:  # (converting the whole block first, then gathering, is faster)
                    v = g[:v.shape[0]]
                    np.copyto(v, val[b0:b0 + BLOCK], casting="unsafe")
                np.take(v, kp, out=ov[o:e], mode="wrap")
            o = e
    assert o == oi.shape[0]


def _compact(cands: Candidates, keeps, k: int, vdt, ws: Workspace):
    """(indices, values as ``vdt``): new arrays (see :class:`Workspace`) with
    the k candidates flagged in ``keeps`` (all when it is None), in order;
    each segment on its thread, into its own range of the two arrays."""
    oi, ov = ws.outputs(k, vdt)
    if len(cands.val) == 1:
        _compact_part(cands.idx[0], cands.val[0], None if keeps is None else keeps[0][0], oi, ov, ws)
        return oi, ov
    counts = cands.counts if keeps is None else [c for _, c in keeps]
    at = [0]
    for c in counts:
        at.append(at[-1] + c)
    wss = ws.parts(len(counts))

    def part(j):
        _compact_part(cands.idx[j], cands.val[j], None if keeps is None else keeps[j][0],
                      oi[at[j]:at[j + 1]], ov[at[j]:at[j + 1]], wss[j])

    parallel.run_all(part, range(len(counts)))
    return oi, ov


def top_k(x: np.ndarray, k: int, ws: Workspace | None = None, value_dtype=None):
    """(indices, values): the canonical top-k set of ``x`` (sorted indices) and
    ``x`` at those indices, converted to ``value_dtype`` when given.  ``ws``
    (optional) is reused across calls; the returned arrays are new, or the
    ones the previous call with the same ``ws`` returned when nothing refers
    to them any more (:class:`Workspace`).  Device arrays stay on their device
    (the radix select of :mod:`psmpi.kernels`)."""
    if is_device_array(x):
        idx = device_of(x).top_k(x, k)
        vals = x[idx]
        return idx, vals if value_dtype is None else vals.astype(value_dtype)
    x = _as_float(x)
    d = x.shape[0]
    k = max(0, min(int(k), d))
    vdt = x.dtype if value_dtype is None else np.dtype(value_dtype)
    if k == d:
        sel = np.arange(d)
    elif k == 0:
        sel = np.empty(0, np.intp)
    elif d < MIN_FAST_D and k == 1:  # the first index of the largest magnitude
        m = np.abs(x)
        sel = m.argmax(keepdims=True)  # (the first NaN if there is one)
        if np.isnan(m[sel[0]]):  # NaN ties with infinities
            sel = _nan_to_inf(m).argmax(keepdims=True)
    else:
        out = _sampled(x, k, vdt, Workspace() if ws is None else ws) if d >= MIN_FAST_D else None
        if out is not None:
            return out
        sel = np.flatnonzero(_exact(np.abs(x), k))  # direct exact selection over all of x
    with np.errstate(over="ignore"):  # like Compressor.wire_values: an overflow becomes inf
        return sel, x.take(sel, mode="clip").astype(vdt, copy=False)


def _top1(x: np.ndarray, vdt, lim: float):
    """Top-1 of a short 1-D float vector on the host, the common case of
    :func:`top_k` with less Python around it: (index, value as ``vdt``) as
    one-entry arrays, or None when its largest magnitude is not <= ``lim``
    (the largest finite ``vdt``): NaN (which ties with infinities), an
    infinity or an overflow to inf, all left to :func:`top_k`."""
    m = np.abs(x)
    i = m.argmax(keepdims=True)  # the first index of the largest magnitude (or the first NaN)
    if not m.item(i[0]) <= lim:  # (as Python numbers: no cast of lim to a narrower dtype)
        return None
    return i, x[i].astype(vdt, copy=False)


def top_k_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k entries of largest magnitude (canonical ties:
    lowest indices first; see the module docstring)."""
    return top_k(x, k)[0]


@register
class TopK(Compressor):
    """Greedy sparsification: keep the K largest |x_j|. Contractive, alpha = K/d."""

    name = "topk"
    takes_param = True
    device_native = True

    def setup(self, param):
        self.k = parse_count(self.name, param, self.d)
        self._ws = None  # buffers reused from round to round
        vdt = self.value_dtype
        self._lim = float(np.finfo(vdt).max) if self.k == 1 and vdt.kind == "f" else None  # Top-1: see _top1

    @property
    def alpha(self):
        return self.k / self.d

    def compress(self, x, rng):
        if (self._lim is not None and type(x) is np.ndarray and x.ndim == 1 and 0 < x.shape[0] < MIN_FAST_D
                and x.dtype.kind == "f" and self.scale == 1.0):
            out = _top1(x, self.value_dtype, self._lim)
            if out is not None:
                return Sparse(self.d, *out)
        if self._ws is None:
            self._ws = Workspace()
        direct = self.scale == 1.0  # values straight into the wire dtype, no extra copy
        idx, vals = top_k(x, self.k, self._ws, self.value_dtype if direct else None)  # on x's device
        return Sparse(self.d, idx, vals if direct else self.wire_values(vals))
