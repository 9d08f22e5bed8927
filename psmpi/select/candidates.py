"""Step 2 of :mod:`psmpi.select`: one streaming pass over x that collects the
candidates -- the entries not below a threshold -- into reused lists, one
list per thread's contiguous part of x."""
from __future__ import annotations

import numpy as np

from .. import parallel
from .workspace import Workspace

CHUNK = 1 << 18  # elements per streaming chunk of x (its masks stay in L2, the chunk in L3)
PAR_MIN_D = 1 << 20  # from this size on the pass, the scan and the compaction run on parallel.threads() threads
PAR_MIN_PART = 1 << 19  # elements of x per thread, at least


def _pad(b: int, q: float) -> int:
    """True entries to append to a chunk mask of b entries of which about a
    fraction q is set, so that ``nonzero`` sees more than 10 % set (if about
    0.9 q is): below that numpy takes a path that costs about 12 ns per hit
    instead of about 0.4 ns per entry, the better one only below ~4 %."""
    return int((0.1 - 0.9 * q) * b / 0.9) + 64 if 0.04 <= q < 0.1 / 0.9 else 0


def parts(d: int) -> list:
    """The contiguous (start, stop) ranges of x, one per thread: one range
    below PAR_MIN_D or with one thread (see :mod:`psmpi.parallel`).  Only
    the speed depends on them: every thread does on its range what one
    thread would do there, and the results are joined in index order."""
    if d < PAR_MIN_D or parallel.on_pool_thread():
        return [(0, d)]  # (on a thread of the pool, run_all would run the parts one after another)
    p = min(parallel.threads(), d // PAR_MIN_PART)
    return parallel.chunks(d, p) if p > 1 else [(0, d)]


class Difference:
    """``a - b`` (1-D arrays of one length) without writing it: the selection
    computes it a chunk at a time, each chunk into a reused buffer that stays
    in cache, so that the error-feedback step ``TopK(target - g)`` reads
    ``target`` and ``g`` once and writes nothing of size d.  Each entry is
    numpy's ``a - b`` (the same ufunc on the same operands), so the result is
    the one of the written difference, bit for bit."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"a difference of arrays of shapes {a.shape} and {b.shape}")
        self.a, self.b = a, b
        self.dtype = np.result_type(a, b)
        self.shape = a.shape

    def chunk(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """(a - b)[lo:hi], written into ``out``'s first hi - lo entries."""
        return np.subtract(self.a[lo:hi], self.b[lo:hi], out=out[:hi - lo])

    def written(self) -> np.ndarray:
        return self.a - self.b


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
    """The pass of :func:`collect` over ``x[lo:hi]``, into ``ws``'s lists
    (positions in x); returns their length."""
    b = min(CHUNK, hi - lo)
    pad = _pad(b, q)
    m1, m2 = ws.masks(b + pad)
    m1[b:] = True
    idx, val = ws.lists(x.dtype, cap)
    diff = ws.chunk(x.dtype, b) if isinstance(x, Difference) else None
    nt = -t
    pos = 0
    for start in range(lo, hi, b):
        xc = x[start:min(start + b, hi)] if diff is None else x.chunk(start, min(start + b, hi), diff)
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


def collect(x: np.ndarray, t, ws: Workspace, cap: int, q: float = 0.0) -> int:
    """Collect the indices i with not(|x_i| < t) (NaN is in) and the values
    x_i, in order, into the lists of ``ws`` (``ws.idx[:n]`` and ``ws.val[:n]``
    with one thread; ``ws.cands``, a :class:`Candidates`, either way), in
    one chunked pass that reads x once and writes nothing of size d; returns
    n.  ``q``: the expected fraction of such i (see :func:`_pad`).  Large x:
    each thread passes over one contiguous range of x (:func:`parts`), into
    its own lists.

    The chunk's mask is ``(x < t) <= (x <= -t)`` (on booleans: not(x < t) or
    x <= -t), which is |x| >= t or NaN for t >= 0 without writing |x|."""
    d = x.shape[0]
    t = x.dtype.type(t)
    ranges = parts(d)
    if len(ranges) == 1:
        wss, counts = [ws], [_pass(x, 0, d, t, ws, cap, q)]
    else:
        wss = ws.parts(len(ranges))

        def part(j):
            lo, hi = ranges[j]
            return _pass(x, lo, hi, t, wss[j], cap * (hi - lo) // d + 1024, q)

        counts = parallel.run_all(part, range(len(ranges)))
    ws.cands = Candidates(wss, counts)
    return ws.cands.shape[0]
