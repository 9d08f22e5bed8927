"""Array backend: numpy on the CPU, CuPy on the GPU (probed once, lazily).

This is the one module that imports CuPy.  Everything else asks here:
``cupy_or_none()`` (the module when a device is usable), ``get_array_module``,
``is_device_array``, ``to_numpy`` / ``to_device`` and ``synchronize`` (before
an MPI call on device memory).  Without CuPy or without a device every helper
degrades to numpy, so the same high-level code runs on the CPU.
"""
from __future__ import annotations

import functools
import os
import shutil

import numpy as np


@functools.lru_cache(maxsize=1)
def cupy_or_none():
    """The cupy module when it imports and sees a device, else None."""
    if os.environ.get("PSMPI_NO_GPU"):
        return None
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDA driver errors: no usable GPU
        return None


def has_gpu() -> bool:
    return cupy_or_none() is not None


def gpu_status() -> str:
    cp = cupy_or_none()
    if cp is None:
        return "none (CuPy not installed or no CUDA device)"
    props = cp.cuda.runtime.getDeviceProperties(0)
    return f"{props['name'].decode()} (CuPy {cp.__version__})"


def require_gpu():
    """The cupy module, or a RuntimeError saying why there is none."""
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError("--device gpu needs CuPy and a CUDA device: pip install 'psmpi[gpu]' "
                           "(psmpi info shows what was found)")
    return cp


def is_device_array(a) -> bool:
    """True for a CuPy array (without importing CuPy when it is not loaded)."""
    if isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] != "cupy":
        return False
    cp = cupy_or_none()
    return cp is not None and isinstance(a, cp.ndarray)


def get_array_module(a):
    return cupy_or_none() if is_device_array(a) else np


def to_numpy(a) -> np.ndarray:
    if is_device_array(a):
        return cupy_or_none().asnumpy(a)
    return np.asarray(a)


def to_device(a, device: str = "gpu"):
    """``a`` on ``device`` ('cpu' or 'gpu')."""
    if device == "cpu":
        return to_numpy(a)
    return require_gpu().asarray(a)


def synchronize() -> None:
    """Wait for the current CuPy stream (a no-op without a GPU)."""
    cp = cupy_or_none()
    if cp is not None:
        cp.cuda.get_current_stream().synchronize()


def nvcc_path() -> str | None:
    """The CUDA compiler, for compiling kernel sources ahead of time (tests, CI)."""
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None
