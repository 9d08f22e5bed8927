"""Array backend: numpy on the CPU, CuPy on the GPU (probed once, lazily)."""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def cupy_or_none():
    """The cupy module when it imports and sees a device, else None."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDA driver errors: no usable GPU
        return None


def gpu_status() -> str:
    cp = cupy_or_none()
    if cp is None:
        return "none (CuPy not installed or no CUDA device)"
    props = cp.cuda.runtime.getDeviceProperties(0)
    return f"{props['name'].decode()} (CuPy {cp.__version__})"


def get_array_module(a):
    cp = cupy_or_none()
    if cp is not None and isinstance(a, cp.ndarray):
        return cp
    return np


def to_numpy(a) -> np.ndarray:
    cp = cupy_or_none()
    if cp is not None and isinstance(a, cp.ndarray):
        return cp.asnumpy(a)
    return np.asarray(a)
