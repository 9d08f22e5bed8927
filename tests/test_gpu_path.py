"""The --device gpu path.

Without a GPU it runs on the emulated device (PSMPI_EMULATE_GPU=1): numpy
arrays that, like CuPy's, refuse to meet host arrays, sparse matrices that only
take such arrays, and the device algorithms (radix-select Top-K, the fused EF21
update) computed with numpy.  Those tests prove the wiring: what lives on the
device, what crosses to the host, and that the iterates equal the CPU path bit
for bit.  The tests at the end run CuPy on a real device and skip without one.
"""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import SweepPair, mpirun
from psmpi import backend
from psmpi.api import train
from psmpi.backend import EmulatedArray, EmulatedCSR, EmulatedDevice
from psmpi.config import ConfigError, TrainConfig
from psmpi.results import read_result

needs_gpu = pytest.mark.skipif(not backend.has_gpu(), reason="no CuPy or no CUDA device")


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setenv("PSMPI_EMULATE_GPU", "1")


def run(tmp_path, device, name, **kw):
    opts = dict(dataset="breast-cancer", workers=4, iters=30, eval_every=5, quiet=True, backend="serial")
    if kw.get("method") == "ef21-bc":  # no theoretical step implemented
        opts["gamma"] = 0.05
    opts.update(kw)
    return train(dict(device=device, out=str(tmp_path / f"{name}_{device}.h5"), **opts))


def same_run(a, b):
    return np.array_equal(a.x, b.x) and all(np.array_equal(a.metrics[k], b.metrics[k])
                                            for k in ("grad_norm_sq", "loss", "bytes_up", "bits_up_per_worker"))


# ------------------------------------------------------ the emulated device ---
def test_emulated_arrays_refuse_host_arrays_like_cupy():
    dev = EmulatedDevice()
    a = dev.asarray(np.arange(5.0))
    assert isinstance(a + 1.0, EmulatedArray) and isinstance(np.exp(a), EmulatedArray)
    assert isinstance(np.zeros_like(a), EmulatedArray) and isinstance(a[dev.asarray([1, 2])], EmulatedArray)
    with pytest.raises(TypeError, match="host array"):
        a + np.ones(5)
    with pytest.raises(TypeError, match="host array"):
        np.concatenate([a, np.ones(2)])
    with pytest.raises(TypeError, match="host array"):
        a[np.array([1, 2])]
    with pytest.raises(TypeError, match="host array"):
        a[:2] = np.ones(2)
    with pytest.raises(TypeError, match="host array"):
        EmulatedCSR(sp.eye(5, format="csr")) @ np.ones(5)
    host = dev.to_host(a)
    assert type(host) is np.ndarray and np.array_equal(host, np.arange(5.0))
    host[0] = 7.0
    assert a[0] == 0.0  # a transfer is a copy


def test_emulated_kernels_equal_the_cpu_path():
    from psmpi.compressors import make_compressor

    rng = np.random.default_rng(0)
    dev = EmulatedDevice()
    d, k = 50_000, 500
    v, g = rng.standard_normal(d), rng.standard_normal(d)
    v[:100] = 3.0  # ties
    p = make_compressor(f"topk:{k}", d).compress(v - g, rng)
    g_cpu = g.copy()
    p.add_to(g_cpu)
    g_dev = dev.asarray(g)
    idx, vals = dev.ef_step(dev.asarray(v), g_dev, k, np.float32)
    assert np.array_equal(dev.to_host(idx), p.indices) and np.array_equal(dev.to_host(vals), p.values)
    assert np.array_equal(dev.to_host(g_dev), g_cpu)


@pytest.mark.parametrize("spec", ["topk:1%", "topk:7", "randk:9", "identity", "sign"])
def test_device_native_compressors_keep_their_output_on_the_device(spec):
    from psmpi.compressors import make_compressor
    from psmpi.compressors.payload import to_host

    dev = EmulatedDevice()
    x = np.random.default_rng(1).standard_normal(40_000)
    x[:50] = 2.5  # ties
    c = make_compressor(spec, x.shape[0])
    assert c.device_native
    p_dev = c.compress(dev.asarray(x), np.random.default_rng(2))
    p_cpu = c.compress(x, np.random.default_rng(2))
    arrays = [getattr(p_dev, f) for f in ("values", "negative") if hasattr(p_dev, f)]
    assert all(isinstance(a, EmulatedArray) for a in arrays)
    host = to_host(p_dev, dev.to_host)
    assert np.array_equal(host.to_dense(), p_cpu.to_dense())


def test_gpu_without_a_device_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PSMPI_EMULATE_GPU", raising=False)
    monkeypatch.setattr(backend, "cupy_or_none", lambda: None)
    with pytest.raises(ConfigError, match="needs CuPy and a CUDA device"):
        run(tmp_path, "gpu", "nodev")
    proc = subprocess.run([sys.executable, "-m", "psmpi", "train", "--device", "cpu", "--cuda-aware", "--iters", "2",
                           "--out", str(tmp_path / "c.h5")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--cuda-aware applies to --device gpu only" in proc.stderr
    from psmpi.config import validate

    with pytest.raises(ConfigError, match="cuda_aware must be true or false"):
        validate(TrainConfig(cuda_aware="yes"))  # a YAML typo must not turn the option on


def test_softmax_on_the_gpu_is_refused_in_one_line(tmp_path, emulated):
    with pytest.raises(ConfigError, match="softmax runs on the CPU only"):
        run(tmp_path, "gpu", "softmax", dataset="iris")


# ----------------------------------------------- the GPU code path, emulated ---
CASES = [("ef21", "topk:2"), ("ef21", "randk:3"), ("ef21-sgdm", "topk:2"), ("ef21-sgd2m", "sign"),
         ("ef21-sgd", "topk:3"), ("ef14", "topk:2"), ("clag", "topk:2"), ("lag", "identity"),
         ("marina", "randk:2"), ("diana", "natural"), ("diana", "qsgd:4"), ("ef21-plus", "topk:2"),
         ("ef21-sgd-ideal", "topk:2"), ("ef21-sgdm-ideal", "randk:2"), ("gd", "identity"), ("dcgd", "randk:3"),
         ("ef21-bc", "topk:2"), ("pp-marina", "randk:2")]


@pytest.mark.parametrize("method,compressor", CASES)
def test_emulated_gpu_run_equals_the_cpu_run_bit_for_bit(tmp_path, emulated, method, compressor):
    cpu = run(tmp_path, "cpu", method, method=method, compressor=compressor)
    gpu = run(tmp_path, "gpu", method, method=method, compressor=compressor)
    assert gpu.config["device"] == "gpu"
    assert same_run(cpu, gpu)


def test_quadratic_problems_run_on_the_device(tmp_path, emulated):
    kw = dict(dataset="quad:identity,d=20,noise=0.5", method="ef21-sgdm", compressor="topk:2", batch_size=1)
    assert same_run(run(tmp_path, "cpu", "q", **kw), run(tmp_path, "gpu", "q", **kw))


def spy_device(monkeypatch) -> dict:
    """Count the emulated device's fused EF21 steps (checking they get device arrays), record
    the shape of everything copied to the host, and every worker after each of its rounds."""
    from psmpi.runtime import driver

    seen = {"ef_step": 0, "to_host": [], "workers": []}
    real_step, real_host, real_round = EmulatedDevice.ef_step, EmulatedDevice.to_host, driver.Worker.round

    def ef_step(self, v, g, k, vdt):
        seen["ef_step"] += 1
        assert isinstance(v, EmulatedArray) and isinstance(g, EmulatedArray)
        return real_step(self, v, g, k, vdt)

    def to_host(self, a):
        seen["to_host"].append(np.shape(a))
        return real_host(self, a)

    def worker_round(self, x, t):
        out = real_round(self, x, t)
        seen["workers"].append(self)
        return out

    monkeypatch.setattr(EmulatedDevice, "ef_step", ef_step)
    monkeypatch.setattr(EmulatedDevice, "to_host", to_host)
    monkeypatch.setattr(driver.Worker, "round", worker_round)
    return seen


def test_state_data_and_fused_kernel_live_on_the_device(tmp_path, emulated, monkeypatch):
    """Worker state and local data are device arrays, the fused EF21 kernel does the update,
    and between evaluations nothing of size d crosses to the host: only the K indices and values."""
    seen = spy_device(monkeypatch)
    iters, k, n = 30, 2, 4
    res = run(tmp_path, "gpu", "spy", method="ef21", compressor=f"topk:{k}", iters=iters, eval_every=iters)
    d = res.x.shape[0]
    assert seen["ef_step"] == n * (iters - 1)  # rounds 1 .. iters-1, every worker
    assert all(isinstance(w.state.g, EmulatedArray) for w in seen["workers"])
    assert all(isinstance(w.ctx.problem.A, EmulatedCSR) and isinstance(w.ctx.problem.b, EmulatedArray)
               for w in seen["workers"])
    shapes = seen["to_host"]
    dense = [s for s in shapes if s == (d,)]
    # d-sized transfers: round 0's dense messages and the two evaluations' gradients, nothing else
    assert len(dense) == n + 2 * n
    assert sorted(s for s in shapes if s != (d,)) == [(k,)] * (2 * n * (iters - 1))


def test_checkpoint_and_resume_on_the_device(tmp_path, emulated):
    kw = dict(method="ef21-sgdm", compressor="topk:2", iters=40)
    full = run(tmp_path, "gpu", "full", **kw)
    run(tmp_path, "gpu", "part", checkpoint_every=15, **dict(kw, iters=20))
    resumed = run(tmp_path, "gpu", "part", resume="auto", **kw)
    assert np.array_equal(full.x, resumed.x)


BC_MPI = {"dataset": "breast-cancer", "method": "ef21-sgdm", "compressor": "topk:2", "iters": 40, "eval_every": 10,
          "workers": 4, "device": "gpu"}
NN_MPI = {"problem": "mlp:16", "dataset": "digits", "method": "ef21-sgdm", "compressor": "topk:1%", "gamma": 0.1,
          "iters": 12, "eval_every": 4, "workers": 4, "batch_size": 8, "device": "gpu", "cuda_aware": True}


@pytest.fixture(scope="module")
def emulated_mpi(tmp_path_factory):
    """The emulated-GPU runs under MPI, one mpirun per number of ranks (SweepPair, the MPI
    side only: each test compares with its CPU serial run): 4 workers one per rank without
    --cuda-aware (mpirun -n 5); with it, two workers per worker rank (mpirun -n 3), the
    breast-cancer run and the MLP run in the same launch."""
    root = tmp_path_factory.mktemp("emulated_mpi")
    env = {"PSMPI_EMULATE_GPU": "1"}
    ranks3 = {"cuda_aware": dict(BC_MPI, cuda_aware=True)}
    if importlib.util.find_spec("torch") is not None:
        ranks3["nn"] = NN_MPI
    runs = {"plain": SweepPair(root / "n5", {"quiet": True}, {"plain": BC_MPI}, 5, env=env, serial=False),
            **dict.fromkeys(ranks3, SweepPair(root / "n3", {"quiet": True}, ranks3, 3, env=env, serial=False))}
    return lambda label: runs[label].mpi(label)


@pytest.mark.parametrize("cuda_aware", [False, True])
def test_emulated_gpu_under_mpi_equals_the_cpu_serial_run(tmp_path, emulated_mpi, cuda_aware):
    """--cuda-aware: the workers receive x into (emulated) device buffers; with it, two
    workers share each worker rank's device (4 workers on 2 worker ranks)."""
    res = emulated_mpi("cuda_aware" if cuda_aware else "plain")
    assert (res.attrs["backend"], res.config["device"], res.config["cuda_aware"]) == ("mpi", "gpu", cuda_aware)
    ref = run(tmp_path, "cpu", "ref", method="ef21-sgdm", compressor="topk:2", iters=40, eval_every=10)
    assert same_run(res, ref)


# --------------------------------------------------------- a real device ---
@needs_gpu
@pytest.mark.parametrize("method,compressor", [("ef21", "topk:2"), ("ef21-sgdm", "topk:3"), ("ef14", "randk:2"),
                                               ("diana", "natural")])
def test_cupy_run_matches_the_cpu_run(tmp_path, method, compressor):
    """On a GPU the sparse products sum in another order, so agreement is to rounding, not bits."""
    cpu = run(tmp_path, "cpu", method, method=method, compressor=compressor)
    gpu = run(tmp_path, "gpu", method, method=method, compressor=compressor)
    np.testing.assert_allclose(gpu.x, cpu.x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.metrics["grad_norm_sq"], cpu.metrics["grad_norm_sq"], rtol=1e-8)


@needs_gpu
def test_cupy_serial_and_mpi_runs_are_identical(tmp_path):
    out = tmp_path / "m.h5"
    proc = subprocess.run(mpirun() + ["-n", "3", sys.executable, "-m", "psmpi", "train", "--dataset", "breast-cancer",
                                      "--device", "gpu", "--iters", "40", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ref = run(tmp_path, "gpu", "ref", workers=2, iters=40, eval_every=None)
    assert np.array_equal(read_result(str(out)).x, ref.x)


# --------------------------------------------- neural networks on the device ---
NN = dict(problem="mlp:16", dataset="digits", workers=4, iters=12, eval_every=4, gamma=0.1, test_fraction=0.2)
NN_CASES = [("ef21", "topk:1%"), ("ef21-sgdm", "topk:1%"), ("ef14", "topk:1%"), ("diana", "natural"),
            ("marina", "randk:40"), ("spars-ams", "topk:1%"), ("ef21-page", "topk:1%")]


@pytest.mark.parametrize("method,compressor", NN_CASES)
def test_neural_network_on_the_emulated_gpu_equals_the_cpu_run_bit_for_bit(tmp_path, emulated, method, compressor):
    pytest.importorskip("torch")
    kw = dict(NN, method=method, compressor=compressor, eval_rows=200)
    cpu, gpu = run(tmp_path, "cpu", method, **kw), run(tmp_path, "gpu", method, **kw)
    assert gpu.config["device"] == "gpu" and same_run(cpu, gpu)
    for k in ("train_accuracy", "test_loss", "test_accuracy", "samples"):
        assert np.array_equal(cpu.metrics[k], gpu.metrics[k]), k


def test_neural_network_model_rows_and_state_live_on_the_device(tmp_path, emulated, monkeypatch):
    """The workers' model is one copy on the device whose flat parameters and gradients are
    device views of its torch buffers (no copy), the rows are torch tensors there, the state
    vectors are device arrays, the fused EF21 kernel runs, and only messages and the
    evaluations' gradients cross to the host."""
    torch = pytest.importorskip("torch")
    seen = spy_device(monkeypatch)
    iters, n = 10, 4
    res = run(tmp_path, "gpu", "nnspy", **dict(NN, method="ef21", compressor="topk:5", iters=iters, eval_every=iters,
                                               test_fraction=None))
    d = res.x.shape[0]
    models = {id(w.ctx.problem.model) for w in seen["workers"]}
    assert len(models) == 1  # the four workers of this process share the device copy
    ctx = seen["workers"][-1].ctx
    fm = ctx.problem.model
    assert fm.device is not None and fm.device.name == "gpu"
    assert isinstance(fm.x, EmulatedArray) and isinstance(fm.g, EmulatedArray)
    assert fm.x.ctypes.data == fm.flat.data_ptr() and fm.g.ctypes.data == fm.flat_grad.data_ptr()
    storage = fm.flat.untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == storage for p in fm.module.parameters())  # views of the flat buffer
    assert isinstance(ctx.problem._X, torch.Tensor) and isinstance(ctx.problem._y, torch.Tensor)
    assert isinstance(ctx.eval_problem._X, torch.Tensor)  # the --eval-rows subset (1024 of 4 x 359 rows)
    assert ctx.eval_problem.model is fm and ctx.eval_problem.rows == 256
    assert all(isinstance(w.state.g, EmulatedArray) for w in seen["workers"])
    assert seen["ef_step"] == n * (iters - 1)
    dense = [s for s in seen["to_host"] if s == (d,)]
    assert len(dense) == n + 2 * n  # round 0's dense messages and the two evaluations' gradients
    assert sorted(s for s in seen["to_host"] if s != (d,)) == [(5,)] * (2 * n * (iters - 1))


def test_neural_network_on_the_emulated_gpu_under_mpi_equals_the_cpu_serial_run(tmp_path, emulated_mpi):
    """An MLP on the emulated GPU, --cuda-aware, 4 workers on 2 worker ranks (the
    ``emulated_mpi`` launch of 3 ranks) against the CPU serial run."""
    pytest.importorskip("torch")
    res = emulated_mpi("nn")
    assert (res.attrs["backend"], res.config["device"], res.config["cuda_aware"]) == ("mpi", "gpu", True)
    ref = run(tmp_path, "cpu", "ref", problem="mlp:16", dataset="digits", method="ef21-sgdm", compressor="topk:1%",
              gamma=0.1, iters=12, eval_every=4, batch_size=8)
    assert same_run(res, ref)


@needs_gpu
def test_cupy_neural_network_run_matches_the_cpu_run(tmp_path):
    """On a GPU, cuDNN/cuBLAS sum in another order than the CPU: agreement to float32 rounding
    over a few rounds, not bits."""
    pytest.importorskip("torch")
    kw = dict(NN, method="ef21-sgdm", compressor="topk:1%", iters=6, eval_every=3)
    cpu, gpu = run(tmp_path, "cpu", "nn", **kw), run(tmp_path, "gpu", "nn", **kw)
    np.testing.assert_allclose(gpu.x, cpu.x, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gpu.metrics["loss"], cpu.metrics["loss"], rtol=1e-4)
