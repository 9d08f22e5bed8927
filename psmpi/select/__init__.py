"""Top-k selection by magnitude: exact, canonical, fast (the TopK compressor's engine).

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
   confidence band of ``Z`` = 4.5 standard deviations) -- :mod:`.sample`;
2. one streaming pass over x in chunks flags ``not(|x| < t_lo)``
   (as ``(x < t_lo) <= (x <= -t_lo)`` on booleans: no |x| is written), turns
   the flags into positions with ``nonzero`` (the mask padded with set
   entries when 4-10 % are set: there numpy's sparse path, ~12 ns per hit,
   is slower than its dense one, ~0.4 ns per entry) and appends the
   candidates' indices and values to reused buffers: x is read once,
   nothing of size d is written -- :mod:`.candidates`;
3. the k-th largest magnitude m_k of the n candidates is found without
   partitioning them: the sampled magnitudes above ``t_lo`` are about a
   uniform sample of the candidates, so their k/n quantile, plus and minus
   ``ZB`` standard deviations, brackets m_k.  One blockwise scan of the
   candidates counts those above the bracket and collects the few inside,
   and m_k is the right order statistic of these (found by partitioning a
   sub-sample first, then the entries between two of its order statistics:
   :mod:`.order`).  The scan also leaves the flags of the entries above the
   bracket, to which those inside it and not below m_k are added, so the
   final compaction into the two returned arrays (values converted to the
   wire dtype on the way) reads each candidate once more, block by block
   -- :mod:`.fast`;
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
Called on a thread of that pool (inside ``run_all``), the selection stays on it.

Top-1 of a short vector (d < ``MIN_FAST_D``, the common EF21 case) takes a
shorter way, :func:`top1`: one ``argmax`` of |x| (the first index of the
largest magnitude), :func:`top_k` only when that magnitude is NaN, infinite
or beyond the wire dtype.

The error-feedback step of the EF21 family selects from a difference,
``TopK(target - g)``.  Given a :class:`Difference` instead of the written
vector, steps 1 and 2 compute it where they read it (the sampled runs, then
each chunk of the pass into a reused buffer that stays in cache), so that
target and g are read once and nothing of size d is written; the other paths
write it first.  Each entry is numpy's ``a - b``, so the result is the same.

The buffers live in a :class:`Workspace`; a TopK compressor keeps one, so
from the second round on the pass writes into memory that is already mapped.
The two returned arrays are new, or the previous call's when nothing but the
workspace refers to them any more (see :class:`Workspace`): a caller never
sees a result it holds change.  Device arrays go to their device's exact
radix select (:mod:`psmpi.kernels`), which returns the same set.
Measured by ``psmpi bench compress`` (BENCHMARKS.md).
"""
from __future__ import annotations

import numpy as np

from ..backend import device_of, is_device_array
from .candidates import Difference
from .fast import sampled
from .order import exact, nan_to_inf
from .sample import MIN_FAST_D
from .workspace import Workspace

__all__ = ["top_k", "top_k_indices", "top1", "Workspace", "Difference", "MIN_FAST_D"]


def _as_float(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"top-k needs a 1-D vector, got shape {x.shape}")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return x


def top_k(x: np.ndarray, k: int, ws: Workspace | None = None, value_dtype=None):
    """(indices, values): the canonical top-k set of ``x`` (sorted indices) and
    ``x`` at those indices, converted to ``value_dtype`` when given.  ``x`` may
    be a :class:`Difference` a - b of host arrays: the same result as for the
    written a - b, without writing it (on the sampled path).  ``ws``
    (optional) is reused across calls; the returned arrays are new, or the
    ones the previous call with the same ``ws`` returned when nothing refers
    to them any more (:class:`Workspace`).  Device arrays stay on their device
    (the radix select of :mod:`psmpi.kernels`)."""
    if is_device_array(x):
        idx = device_of(x).top_k(x, k)
        vals = x[idx]
        return idx, vals if value_dtype is None else vals.astype(value_dtype)
    x = x if isinstance(x, Difference) else _as_float(x)
    d = x.shape[0]
    k = max(0, min(int(k), d))
    vdt = x.dtype if value_dtype is None else np.dtype(value_dtype)
    if isinstance(x, Difference) and not (d >= MIN_FAST_D and 0 < k < d):
        x = x.written()  # only the sampled path computes a difference where it reads it
    if k == d:
        sel = np.arange(d)
    elif k == 0:
        sel = np.empty(0, np.intp)
    elif d < MIN_FAST_D and k == 1:  # the first index of the largest magnitude
        m = np.abs(x)
        sel = m.argmax(keepdims=True)  # (the first NaN if there is one)
        if np.isnan(m[sel[0]]):  # NaN ties with infinities
            sel = nan_to_inf(m).argmax(keepdims=True)
    else:
        out = sampled(x, k, vdt, Workspace() if ws is None else ws) if d >= MIN_FAST_D else None
        if out is not None:
            return out
        if isinstance(x, Difference):  # the sample missed: written after all
            x = x.written()
        sel = np.flatnonzero(exact(np.abs(x), k))  # direct exact selection over all of x
    with np.errstate(over="ignore"):  # like Compressor.wire_values: an overflow becomes inf
        return sel, x.take(sel, mode="clip").astype(vdt, copy=False)


def top1(x: np.ndarray, vdt, lim: float):
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
