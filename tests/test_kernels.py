"""GPU kernels: every source compiles with nvcc (no GPU needed), the device
algorithms agree with the CPU path (run on the host here, on the device when
CuPy sees one)."""
import re
import subprocess

import numpy as np
import pytest

from psmpi import backend
from psmpi.compressors import make_compressor
from psmpi.kernels import SOURCES, radix_kth, select_from_flags, top_k_radix_host
from psmpi.select import top_k_indices

NVCC = backend.nvcc_path()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
needs_gpu = pytest.mark.skipif(not backend.has_gpu(), reason="no CuPy or no CUDA device")


def compile_ptx(code: str, tmp_path, name="k"):
    src = tmp_path / f"{name}.cu"
    src.write_text(code)
    out = tmp_path / f"{name}.ptx"
    proc = subprocess.run([NVCC, "--ptx", "-arch=sm_80", "-Werror", "all-warnings", "-o", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    return proc, out


@needs_nvcc
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_kernel_source_compiles_with_nvcc_and_defines_its_kernels(name, tmp_path):
    proc, out = compile_ptx(SOURCES[name].code, tmp_path, name)
    assert proc.returncode == 0, proc.stderr
    entries = set(re.findall(r"\.entry\s+(\w+)", out.read_text()))
    assert entries == set(SOURCES[name].kernels)  # the names Python launches exist, unmangled


@needs_nvcc
def test_a_syntax_error_fails_the_compile_check(tmp_path):
    broken = SOURCES["signs"].code.replace("out[b] = (unsigned char)byte;", "out[b] = (unsigned char)byte")
    assert broken != SOURCES["signs"].code
    proc, _ = compile_ptx(broken, tmp_path, "broken")
    assert proc.returncode != 0


def test_sources_need_no_headers():
    """NVRTC (CuPy's compiler) has no system headers."""
    for s in SOURCES.values():
        assert "#include" not in s.code


# ----------------------------------------------- the algorithm on the host ---
def inputs(rng):
    n = rng.standard_normal(20_000)
    with_nan = n.copy()
    with_nan[[3, 999, 5000]] = np.nan
    with_nan[[10, 11]] = [np.inf, -np.inf]
    return {"normal": n, "ties": rng.integers(-2, 3, 20_000).astype(np.float64), "zeros": np.zeros(3000),
            "nan-inf": with_nan, "float32": n.astype(np.float32), "cauchy32": rng.standard_cauchy(9000).astype(np.float32),
            "signed-zero": np.array([0.0, -0.0, 1.0, -1.0, 0.0])}


def test_radix_select_on_the_host_equals_the_cpu_topk():
    rng = np.random.default_rng(0)
    for name, x in inputs(rng).items():
        d = x.shape[0]
        for k in sorted({1, 2, 3, d // 100 + 1, d // 10, d // 2, d - 1}):
            assert np.array_equal(top_k_radix_host(x, k), top_k_indices(x, k)), (name, k)


def test_radix_kth_finds_the_kth_largest_key():
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 1 << 16, 5000).astype(np.uint64)

    def hist(prefix, mask, shift):
        m = keys[(keys & np.uint64(mask)) == np.uint64(prefix)]
        return np.bincount(((m >> np.uint64(shift)) & np.uint64(255)).astype(np.intp), minlength=256)

    srt = np.sort(keys)[::-1]
    for k in (1, 2, 100, 4999, 5000):
        assert radix_kth(hist, 16, k) == int(srt[k - 1])


def test_select_from_flags_takes_the_lowest_ties():
    flags = np.array([1, 2, 1, 0, 1, 2], np.int8)
    assert np.array_equal(select_from_flags(np, flags, 3), [0, 1, 5])
    assert np.array_equal(select_from_flags(np, flags, 5), [0, 1, 2, 4, 5])


def test_device_functions_say_why_without_a_gpu(monkeypatch):
    monkeypatch.setattr(backend, "cupy_or_none", lambda: None)
    from psmpi import kernels

    with pytest.raises(RuntimeError, match="CuPy"):
        kernels.top_k_device(np.ones(3), 1)


# ------------------------------------------------------- on the device ---
@needs_gpu
def test_device_topk_equals_cpu_topk():
    cp = backend.cupy_or_none()
    from psmpi.kernels import top_k_device

    rng = np.random.default_rng(2)
    for name, x in inputs(rng).items():
        for k in (1, 7, x.shape[0] // 10 + 1):
            got = cp.asnumpy(top_k_device(cp.asarray(x), k))
            assert np.array_equal(got, top_k_indices(x, k)), (name, k)


@needs_gpu
def test_device_ef21_step_equals_the_cpu_update_bit_for_bit():
    cp = backend.cupy_or_none()
    from psmpi.kernels import ef21_step_device

    rng = np.random.default_rng(3)
    d, k = 100_000, 1000
    v, g = rng.standard_normal(d), rng.standard_normal(d)
    comp = make_compressor(f"topk:{k}", d)
    p = comp.compress(v - g, rng)
    g_cpu = g.copy()
    p.add_to(g_cpu)
    g_dev = cp.asarray(g)
    idx, vals = ef21_step_device(cp.asarray(v), g_dev, k)
    assert np.array_equal(cp.asnumpy(idx), p.indices)
    assert np.array_equal(cp.asnumpy(vals), p.values)
    assert np.array_equal(cp.asnumpy(g_dev), g_cpu)


@needs_gpu
def test_device_sign_packing_equals_numpy_packbits():
    cp = backend.cupy_or_none()
    from psmpi.kernels import pack_signs_device

    rng = np.random.default_rng(4)
    for d in (1, 8, 13, 10_001):
        x = rng.standard_normal(d)
        x[0] = -0.0
        for dt in (np.float64, np.float32):
            got = cp.asnumpy(pack_signs_device(cp.asarray(x.astype(dt))))
            assert np.array_equal(got, np.packbits(np.signbit(x)))


@needs_gpu
def test_topk_compressor_accepts_device_arrays():
    cp = backend.cupy_or_none()
    rng = np.random.default_rng(5)
    x = rng.standard_normal(50_000)
    c = make_compressor("topk:1%", 50_000)
    p_dev, p_cpu = c.compress(cp.asarray(x), rng), c.compress(x, rng)
    assert backend.is_device_array(p_dev.indices)  # stays on the device until the message is encoded
    assert np.array_equal(cp.asnumpy(p_dev.indices), p_cpu.indices)
    assert np.array_equal(cp.asnumpy(p_dev.values), p_cpu.values)
