"""Array backend: numpy on the CPU, CuPy on the GPU (probed once, lazily).

This is the one module that imports CuPy.  Everything else asks here:
``cupy_or_none()`` (the module when a device is usable), ``is_device_array``,
``to_numpy``, ``synchronize`` (before an MPI call on device memory) and the
:class:`Device` objects (``get_device``, ``device_of``) that move arrays and
run the kernels.  Without CuPy or without a device every helper degrades to
numpy, so the same high-level code runs on the CPU.
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
    """True for a CuPy array (without importing CuPy when it is not loaded) and
    for an :class:`EmulatedArray`."""
    if isinstance(a, EmulatedArray):
        return True
    if isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] != "cupy":
        return False
    cp = cupy_or_none()
    return cp is not None and isinstance(a, cp.ndarray)


def to_numpy(a) -> np.ndarray:
    if isinstance(a, EmulatedArray):
        return np.array(a.view(np.ndarray))
    if is_device_array(a):
        return cupy_or_none().asnumpy(a)
    return np.asarray(a)


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


# ------------------------------------------------------------- devices ---
class Device:
    """Where a worker's vectors, local data and compression live.

    The high-level code (methods, problems, compressors) is written once with
    numpy calls; numpy dispatches them to CuPy for device arrays.  What cannot
    dispatch goes through the device: moving arrays (``asarray``/``to_host``),
    sparse matrices (``csr``) and the kernels (``top_k`` and the fused
    EF21 update ``ef_step``).  :class:`Device` itself is the CPU: every method
    is the identity or the numpy/scipy function.
    """

    name = "cpu"
    on_host = True
    torch_device = "cpu"  # where a neural network's torch tensors live for this device

    def asarray(self, a, dtype=None):
        """``a`` (host or device) as an array of this device."""
        return np.asarray(a, dtype=dtype)

    def from_torch(self, t):
        """An array of this device sharing the memory of the torch tensor ``t`` (on
        ``torch_device``): no copy.  A neural network's flat parameters and gradients are
        read and written through these views (:class:`psmpi.problems.nn.FlatModel`)."""
        return t.numpy()

    def to_host(self, a) -> np.ndarray:
        return to_numpy(a)

    def csr(self, A):
        """A scipy CSR matrix in this device's sparse format."""
        return A

    def top_k(self, x, k: int):
        """Sorted indices of the canonical top-k set of a device vector (as a device array)."""
        raise NotImplementedError

    def ef_step(self, v, g, k: int, value_dtype):
        """Fused EF21 update on the device: diff = v - g, idx = top-k(diff),
        c = value_dtype(diff[idx]), g[idx] += c; returns (idx, c)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    def __repr__(self):
        return f"<device {self.name}>"


class CupyDevice(Device):
    """The GPU through CuPy: cupyx.scipy.sparse CSR matrices, the kernels of :mod:`psmpi.kernels`."""

    name = "gpu"
    on_host = False

    def __init__(self):
        self.cp = require_gpu()
        n = self.cp.cuda.runtime.getDeviceCount()
        from .launch import local_rank

        self.index = local_rank() % n  # ranks of one node spread over its GPUs
        self.cp.cuda.Device(self.index).use()
        self.torch_device = f"cuda:{self.index}"

    def asarray(self, a, dtype=None):
        return self.cp.asarray(a, dtype=dtype)

    def from_torch(self, t):
        return self.cp.from_dlpack(t)  # a CuPy view of the CUDA tensor (DLPack)

    def csr(self, A):
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix(A)

    def top_k(self, x, k):
        from .kernels import top_k_device

        return top_k_device(x, k)

    def ef_step(self, v, g, k, value_dtype):
        from .kernels import ef21_step_device

        return ef21_step_device(v, g, k, value_dtype)

    def synchronize(self):
        self.cp.cuda.get_current_stream().synchronize()


class EmulatedArray(np.ndarray):
    """A numpy array standing in for a device array (:class:`EmulatedDevice`).

    Like a CuPy array, it refuses to meet a host array in a ufunc, a numpy
    function, an index or an assignment (0-d arrays and Python scalars are
    fine), so code that forgets to move an array fails here as it would on a
    GPU.  Results stay emulated-device arrays."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        args = [_unwrap(a, ufunc.__name__) for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o, ufunc.__name__) for o in out)
        res = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(res)

    def __array_function__(self, func, types, args, kwargs):
        name = getattr(func, "__name__", str(func))
        return _wrap(func(*_unwrap_all(args, name), **_unwrap_all(kwargs, name)))

    def __getitem__(self, key):
        return _wrap(self.view(np.ndarray)[_unwrap_all(key, "indexing")])

    def __setitem__(self, key, value):
        self.view(np.ndarray)[_unwrap_all(key, "indexing")] = _unwrap(value, "assignment")


def _unwrap(a, what):
    if isinstance(a, EmulatedArray):
        return a.view(np.ndarray)
    if isinstance(a, np.ndarray) and a.ndim > 0:
        raise TypeError(f"{what}: a host array met a device array (move it with Device.asarray)")
    return a


def _unwrap_all(obj, what):
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap_all(o, what) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap_all(v, what) for k, v in obj.items()}
    return _unwrap(obj, what)


def _wrap(res):
    if isinstance(res, tuple):
        return tuple(_wrap(r) for r in res)
    if isinstance(res, np.ndarray) and not isinstance(res, EmulatedArray) and res.ndim > 0:
        return res.view(EmulatedArray)
    return res


class EmulatedCSR:
    """A scipy CSR matrix on the emulated device: products take and give EmulatedArrays."""

    def __init__(self, A):
        self.A = A
        self.shape = A.shape

    def __matmul__(self, x):
        return _wrap(self.A @ _unwrap(x, "sparse product"))

    def __getitem__(self, rows):
        return EmulatedCSR(self.A[_unwrap_all(rows, "sparse indexing")])

    @property
    def T(self):
        return EmulatedCSR(self.A.T)


class EmulatedDevice(Device):
    """The GPU code path on the CPU, for machines without a GPU (``PSMPI_EMULATE_GPU=1``).

    Arrays are :class:`EmulatedArray` (numpy that refuses to mix with host
    arrays), sparse matrices :class:`EmulatedCSR`, and the kernels run the
    device algorithms with numpy: the radix select of
    :func:`psmpi.kernels.top_k_radix_host` and the fused EF21 update written
    as the CUDA kernel computes it.  A neural network's torch tensors stay on
    the CPU; its flat parameters and gradients are emulated views of them, as
    CuPy views of CUDA tensors are on a GPU.  Everything else is the code a GPU runs."""

    name = "gpu"
    on_host = False
    torch_device = "cpu"  # torch has no emulated device: the model stays on the CPU, seen through emulated views

    def asarray(self, a, dtype=None):
        if isinstance(a, EmulatedArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return np.array(a, dtype=dtype).view(EmulatedArray)  # a copy, as a transfer is

    def csr(self, A):
        return EmulatedCSR(A)

    def from_torch(self, t):
        return t.numpy().view(EmulatedArray)  # a view, as DLPack gives CuPy one

    def top_k(self, x, k):
        from .kernels import top_k_radix_host

        return _wrap(np.asarray(top_k_radix_host(x.view(np.ndarray), k), dtype=np.int64))

    def ef_step(self, v, g, k, value_dtype):
        diff = v - g
        idx = self.top_k(diff, k)
        vals = diff[idx].astype(value_dtype)
        g[idx] = g[idx] + vals.astype(np.float64)  # the kernel's g[i] = g[i] + (double)c
        return idx, vals


def emulating() -> bool:
    return bool(os.environ.get("PSMPI_EMULATE_GPU"))


@functools.lru_cache(maxsize=None)
def _device(cls) -> Device:
    return cls()  # one per kind and process: CuPy's device is chosen once


def get_device(name: str = "cpu") -> Device:
    """The device called ``name``: 'cpu', or 'gpu' (CuPy; the emulated device
    when ``PSMPI_EMULATE_GPU`` is set).  Raises RuntimeError without a GPU."""
    if name == "cpu":
        return _device(Device)
    if name != "gpu":
        raise ValueError(f"unknown device '{name}'; valid: cpu, gpu")
    return _device(EmulatedDevice if emulating() else CupyDevice)


def device_of(a) -> Device:
    """The device holding array ``a``."""
    if isinstance(a, EmulatedArray):
        return _device(EmulatedDevice)
    if is_device_array(a):
        return _device(CupyDevice)
    return _device(Device)


def replace_arrays(obj, fn):
    """The dataclass ``obj`` with ``fn`` applied to each field that is an array
    (host or device); ``obj`` itself when ``fn`` changes nothing."""
    import dataclasses

    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray) or is_device_array(v):
            w = fn(v)
            if w is not v:
                changes[f.name] = w
    return dataclasses.replace(obj, **changes) if changes else obj
