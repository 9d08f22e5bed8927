"""The sampled path of :mod:`psmpi.select` (steps 1-4 of its docstring): the
threshold from the sample, the pass, m_k from the bracket, the compaction."""
from __future__ import annotations

import math

import numpy as np

from .. import parallel
from .candidates import Candidates, collect
from .order import largest, nan_to_inf, rth_largest
from .sample import ZB, bracket, gather, lower_rank, sample_size
from .workspace import Workspace

KBLOCK = 1 << 17  # candidates per block of the scan for m_k (its magnitudes and flags stay in cache)
BLOCK = 1 << 17  # candidates per block of the final compaction (its positions and values stay in cache)


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
    :func:`psmpi.select.sample.bracket`: when the counts show that it lies
    there, only the magnitudes inside are partitioned (:func:`rth_largest`),
    and the flags are those above the bracket plus those inside not below
    m_k (ties at m_k: the lowest positions); else a bracket twice as wide
    is tried, else all magnitudes are partitioned."""
    n = cands.shape[0]
    if top.shape[0]:
        for z in (ZB, 2 * ZB):
            above, mid, pos, lows, aboves = _in_bracket(cands, *bracket(top, n, k, z), ws)
            need, m = k - above, mid.shape[0]
            if 1 <= need <= m:  # m_k lies in the bracket: it is the need-th largest there
                kth = rth_largest(mid.copy(), need)
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
    mag = nan_to_inf(np.abs(cands.val[0] if one else np.concatenate(cands.val)))
    kth = np.partition(mag, n - k)[n - k]
    keep = np.greater(mag, kth, out=cands.flag[0] if one else None)
    ties = np.flatnonzero(mag == kth)
    keep[ties[:k - np.count_nonzero(keep)]] = True
    segs = [keep[s:s + c] for s, c in zip(cands.starts, cands.counts)]
    return [(f, int(np.count_nonzero(f))) for f in segs]


def sampled(x: np.ndarray, k: int, vdt, ws: Workspace):
    """Steps 1-4 of the :mod:`psmpi.select` docstring: (indices, values as
    ``vdt``), or None when the sample cannot help or missed twice (the
    caller then runs the direct exact selection)."""
    d = x.shape[0]
    s = sample_size(d)
    r = lower_rank(s, k / d)
    if r is None:
        return None
    sm = gather(x, s, ws.sample(x.dtype, s))
    top = largest(sm, r)
    cap = int(d * (r + 3 * math.sqrt(r)) / s) + 1024  # rarely exceeded: then the lists grow
    n = collect(x, top[0], ws, cap, r / s)
    if n < k:  # the sample missed high: one more pass with a lower threshold
        r = 4 * r + 64
        if r > s // 2:
            return None
        top = largest(sm, r)
        n = collect(x, top[0], ws, 4 * cap, r / s)
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
