"""The buffers of the selection, reused from call to call."""
from __future__ import annotations

import sys

import numpy as np


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
    one more workspace per extra thread (:meth:`parts`).  A
    :class:`psmpi.compressors.topk.TopK` compressor owns one (not to be
    shared by concurrent calls).

    The two arrays a call returns are new, or the ones the previous call
    returned when nothing but this workspace refers to them any more (the
    caller dropped them, and with them every view, buffer export or pending
    send, each of which holds a reference; weak references aside): no caller
    can see them change.
    Then a call allocates nothing large (fresh large arrays cost page faults
    when the allocator has handed their memory back to the system)."""

    def __init__(self):
        self.m1 = self.m2 = self.smp = self.mb = self.f1 = self.cv = self.idx = self.val = self.flag = None
        self.dc = None  # a chunk of a :class:`psmpi.select.Difference`
        self.oi = self.ov = None
        self.more = []  # the workspaces of the other threads' parts (their masks, lists and blocks)
        self.cands = None  # the last pass's candidate list (:class:`psmpi.select.candidates.Candidates`)

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

    def chunk(self, dtype, b):
        """A chunk of ``b`` entries of a difference, computed in place of reading it."""
        if self.dc is None or self.dc.dtype != dtype or self.dc.shape[0] < b:
            self.dc = np.empty(b, dtype)
        return self.dc[:b]

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
