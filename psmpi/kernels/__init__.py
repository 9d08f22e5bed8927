"""GPU building blocks: CuPy RawKernels built lazily from :mod:`.sources`, cached.

Nothing here imports CuPy at import time; :mod:`psmpi.backend` probes it when a
kernel is first needed.  The device functions mirror the CPU path bit for bit
where arithmetic allows:

* :func:`top_k_device` -- the canonical top-k set (the same set as
  :func:`psmpi.select.top_k_indices`: ties to the lowest indices,
  NaN tied with infinities) by an exact radix select on magnitude keys, eight
  bits per pass, then one flag pass and a prefix sum for the ties;
* :func:`ef21_step_device` -- the fused EF21 worker update on the device:
  diff = v - g, select top-K, c = wire-dtype(diff[idx]), g[idx] += c; only the
  K indices and values need to cross to the host;
* :func:`pack_signs_device` -- sign bits packed like ``numpy.packbits``.

:func:`top_k_radix_host` runs the very same radix-select algorithm with numpy
histograms, so the algorithm is tested on machines without a GPU.
"""
from __future__ import annotations

import functools

import numpy as np

from ..backend import require_gpu
from .sources import SOURCES, KernelSource

__all__ = ["SOURCES", "KernelSource", "get_kernel", "top_k_device", "ef21_step_device", "pack_signs_device",
           "top_k_radix_host", "radix_kth", "select_from_flags"]

THREADS = 256


@functools.lru_cache(maxsize=None)
def _module(source: str):
    cp = require_gpu()
    return cp.RawModule(code=SOURCES[source].code, options=("--std=c++14",))


@functools.lru_cache(maxsize=None)
def get_kernel(source: str, name: str):
    """The compiled kernel ``name`` of ``SOURCES[source]`` (built on first use)."""
    if name not in SOURCES[source].kernels:
        raise KeyError(f"{source} has no kernel {name}")
    return _module(source).get_function(name)


def _grid(n: int) -> tuple[int]:
    return (max(1, min(65535, (n + THREADS - 1) // THREADS)),)


def _suffix(dtype) -> tuple[str, type, int]:
    """Kernel suffix, key type and key bits of a float dtype."""
    if np.dtype(dtype) == np.float64:
        return "f64", np.uint64, 64
    if np.dtype(dtype) == np.float32:
        return "f32", np.uint32, 32
    raise TypeError(f"GPU kernels take float32 or float64, not {dtype}")


# ------------------------------------------------------- the algorithm ---
def radix_kth(hist_fn, bits: int, k: int) -> int:
    """The key of the k-th largest entry, one 8-bit digit per pass, most
    significant first.  ``hist_fn(prefix, prefix_mask, shift)`` returns the
    256 counts of digit ``(key >> shift) & 255`` among the keys that equal
    ``prefix`` on ``prefix_mask``."""
    prefix = mask = 0
    remaining = k
    for shift in range(bits - 8, -1, -8):
        h = np.asarray(hist_fn(prefix, mask, shift), dtype=np.int64)
        above = np.cumsum(h[::-1])  # above[j]: entries with digit >= 255 - j
        j = int(np.searchsorted(above, remaining))
        if j > 255:
            raise RuntimeError("radix select: histogram counts are inconsistent")
        remaining -= int(above[j - 1]) if j else 0
        prefix |= (255 - j) << shift
        mask |= 0xFF << shift
    return prefix


def select_from_flags(xp, flags, k: int):
    """Sorted indices: every flag 2 (above the k-th key) plus the lowest-numbered
    flag-1 entries (equal to it) until there are k."""
    gt = flags == 2
    need = k - int(gt.sum())
    eq = flags == 1
    sel = gt | (eq & (xp.cumsum(eq) <= need))
    return xp.flatnonzero(sel)


def _host_keys(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float64:
        key = x.view(np.uint64) & np.uint64(0x7FFFFFFFFFFFFFFF)
        return np.minimum(key, np.uint64(0x7FF0000000000000))
    key = x.view(np.uint32) & np.uint32(0x7FFFFFFF)
    return np.minimum(key, np.uint32(0x7F800000))


def top_k_radix_host(x: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k_device`'s algorithm with numpy in place of the kernels."""
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    d = x.shape[0]
    if k >= d:
        return np.arange(d)
    if k <= 0:
        return np.empty(0, np.intp)
    keys = _host_keys(x)
    kt = keys.dtype.type

    def hist(prefix, mask, shift):
        sel = keys[(keys & kt(mask)) == kt(prefix)]
        return np.bincount(((sel >> kt(shift)) & kt(255)).astype(np.intp), minlength=256)

    kth = kt(radix_kth(hist, 8 * keys.dtype.itemsize, k))
    flags = np.where(keys > kth, 2, np.where(keys == kth, 1, 0)).astype(np.int8)
    return select_from_flags(np, flags, k)


# ------------------------------------------------------ device functions ---
def top_k_device(x, k: int):
    """Sorted int64 indices (a CuPy array) of the canonical top-k set of ``x``."""
    cp = require_gpu()
    x = cp.ascontiguousarray(x)
    if x.dtype not in (cp.float32, cp.float64):
        x = x.astype(cp.float64)
    d = int(x.shape[0])
    k = int(k)
    if k >= d:
        return cp.arange(d, dtype=cp.int64)
    if k <= 0:
        return cp.empty(0, cp.int64)
    sfx, kt, bits = _suffix(x.dtype)
    hist = cp.zeros(256, cp.uint32)
    hist_kernel = get_kernel("topk", f"radix_hist_{sfx}")
    n = np.int64(d)

    def hist_fn(prefix, mask, shift):
        hist.fill(0)
        hist_kernel(_grid(d), (THREADS,), (x, n, kt(prefix), kt(mask), np.int32(shift), hist))
        return cp.asnumpy(hist)  # 1 KiB: the only host traffic of a pass

    kth = radix_kth(hist_fn, bits, k)
    flags = cp.empty(d, cp.int8)
    get_kernel("topk", f"rank_flags_{sfx}")(_grid(d), (THREADS,), (x, n, kt(kth), flags))
    return select_from_flags(cp, flags, k)


def ef21_step_device(v, g, k: int, value_dtype=np.float32):
    """EF21's worker update on the device, in place on ``g`` (float64):
    diff = v - g; idx = top-k(diff); c = value_dtype(diff[idx]); g[idx] += c.
    Returns (idx, c) as CuPy arrays: the message, ready for the codec."""
    cp = require_gpu()
    if v.dtype != cp.float64 or g.dtype != cp.float64 or v.shape != g.shape:
        raise TypeError("ef21_step_device takes float64 v and g of equal shape")
    d = int(v.shape[0])
    diff = cp.empty_like(v)
    get_kernel("ef21", "sub_f64")(_grid(d), (THREADS,), (v, g, diff, np.int64(d)))
    idx = top_k_device(diff, k)
    vdt = np.dtype(value_dtype)
    vals = cp.empty(idx.shape[0], vdt)
    name = "gather_apply_f64_f32" if vdt == np.float32 else "gather_apply_f64_f64"
    kk = int(idx.shape[0])
    get_kernel("ef21", name)(_grid(kk), (THREADS,), (diff, idx, np.int64(kk), vals, g))
    return idx, vals


def pack_signs_device(x):
    """``numpy.packbits(numpy.signbit(x))`` computed on the device (CuPy uint8)."""
    cp = require_gpu()
    x = cp.ascontiguousarray(x)
    sfx, _, _ = _suffix(x.dtype)
    d = int(x.shape[0])
    out = cp.empty((d + 7) // 8, cp.uint8)
    get_kernel("signs", f"pack_signs_{sfx}")(_grid(out.shape[0]), (THREADS,), (x, np.int64(d), out))
    return out
