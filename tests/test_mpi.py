"""The MPI runtime: equivalence with the serial runtime, failure behaviour."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import psmpi
from psmpi.methods import REGISTRY
from psmpi.results import read_result

from conftest import SweepPair, mpirun

pytestmark = pytest.mark.mpi

COMMON = ["--dataset", "breast-cancer", "--iters", "40", "--eval-every", "5", "--quiet", "--seed", "7"]
COMMON_OPTS = {"dataset": "breast-cancer", "iters": 40, "eval_every": 5, "seed": 7}


def _train(args, out, mpi_ranks=None, timeout=180):
    cmd = [sys.executable, "-m", "psmpi", "train", *args, "--out", str(out)]
    if mpi_ranks:
        cmd = mpirun() + ["-n", str(mpi_ranks)] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _check(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]


def _compressor_for(cls) -> str:
    return {"identity": "identity", "unbiased": "randk:2"}.get(cls.compressors, "topk:2")


# every registered method (a new method is covered without editing this file), with a
# compressor of the class it needs; the even-numbered ones run 5 workers on 2 worker ranks
# (3 and 2 workers per rank), the others one worker per rank
CASES = [(name, _compressor_for(cls), (3, 5) if k % 2 == 0 else (4, 3))
         for k, (name, cls) in enumerate(REGISTRY.items())]

# the neural-network runs (psmpi[torch]): 4 workers on 2 worker ranks
MLP_SGDM = {"problem": "mlp", "dataset": "digits", "method": "ef21-sgdm", "gamma": 0.5, "batch_size": 16,
            "compressor": "topk:1%", "iters": 20, "eval_every": 5, "workers": 4, "test_fraction": 0.2}
MLP_POWERSGD = {"problem": "mlp", "dataset": "digits", "method": "ef14", "compressor": "powersgd:2", "gamma": 0.5,
                "batch_size": 16, "iters": 20, "eval_every": 5, "workers": 4}
# every method on a tiny MLP (mlp:4 on digits, d = 310) with a test set and the default evaluation subset
MLP_TABLE = {"problem": "mlp:4", "dataset": "digits", "workers": 3, "iters": 6, "eval_every": 3, "gamma": 0.05,
             "test_fraction": 0.2, "seed": 7}


# d = 40,000 >= MIN_FAST_D: EF21's Top-K step runs fused on the host (TopK.fused_ef_step), 3 workers on 2 ranks
FUSED_EF = {"dataset": "synthetic:rows=120,features=40000,density=0.002,seed=3", "method": "ef21",
            "compressor": "topk:1%", "workers": 3, "iters": 6, "eval_every": 3, "seed": 7}


def _table_run(method, workers) -> dict:
    opts = {**COMMON_OPTS, "method": method, "compressor": _compressor_for(REGISTRY[method]), "workers": workers}
    if REGISTRY[method].stochastic:
        opts["batch_size"] = 4
    if not REGISTRY[method].has_theory:
        opts["gamma"] = 0.01
    return opts


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """The runs that only compare the MPI runtime with the serial one, grouped by their number
    of ranks: one mpirun per group (a SweepPair) instead of one per run and per test, and the
    serial runs in this process (torch imported once per rank, not once per run)."""
    root = tmp_path_factory.mktemp("mpi_equals_serial")
    ranks3 = {m: _table_run(m, w) for m, _, (r, w) in CASES if r == 3}
    ranks3["permk-marina"] = {**COMMON_OPTS, "method": "marina", "compressor": "permk", "workers": 4, "gamma": 0.5}
    ranks3["float64"] = {**COMMON_OPTS, "method": "ef21", "compressor": "topk:3", "workers": 2,
                         "value_dtype": "float64"}
    ranks3["fused-ef"] = FUSED_EF
    torch = importlib.util.find_spec("torch") is not None
    if torch:
        ranks3["mlp-sgdm"] = MLP_SGDM
        ranks3["mlp-powersgd"] = MLP_POWERSGD
        for name, cls in REGISTRY.items():
            ranks3[f"mlp4-{name}"] = {**MLP_TABLE, "method": name, "compressor": _compressor_for(cls)}
    ranks4 = {m: _table_run(m, w) for m, _, (r, w) in CASES if r == 4}
    ranks6 = {"permk-dcgd": {**COMMON_OPTS, "method": "dcgd", "compressor": "permk", "workers": 5, "gamma": 0.5}}
    groups = {}
    for ranks, runs in ((3, ranks3), (4, ranks4), (6, ranks6)):
        groups[ranks] = SweepPair(root / f"n{ranks}", {"quiet": True}, runs, ranks)
    return {label: group for group in groups.values() for label in group.files}, torch


def _pair(launches, label):
    runs, _ = launches
    return runs[label].pair(label)


def _needs_torch(launches):
    if not launches[1]:
        pytest.skip("torch is not installed (psmpi[torch])")


@pytest.mark.parametrize("method,compressor,layout", CASES, ids=[c[0] for c in CASES])
def test_mpi_run_equals_serial_run_bit_for_bit(launches, method, compressor, layout):
    """Each method with --workers W under mpirun -n R (the layout) against the serial runtime
    (one sweep per number of ranks runs them all: the ``launches`` fixture)."""
    _, workers = layout
    a, b = _pair(launches, method)
    assert a.config["method"] == b.config["method"] == method and b.config["compressor"] == compressor
    assert a.attrs["backend"] == "serial" and b.attrs["backend"] == "mpi"
    assert b.attrs["n_workers"] == workers
    assert "Open MPI" in b.attrs["mpi_library"] or "MPICH" in b.attrs["mpi_library"]
    assert np.array_equal(a.x, b.x)
    assert a.gamma == b.gamma
    for name in ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bytes_up", "bytes_down"):
        assert np.array_equal(a.metrics[name], b.metrics[name]), name
    # the run actually moved and communicated
    assert a.metrics["bytes_up"][-1] > 0 and not np.array_equal(a.x, np.zeros_like(a.x))


@pytest.mark.parametrize("method,ranks,workers", [("marina", 3, 4), ("dcgd", 6, 5)])
def test_permk_run_under_mpi_equals_the_serial_run_bit_for_bit(launches, method, ranks, workers):
    """PermK (breast-cancer: d = 30): the workers draw each round's permutation from
    (seed, round) without talking, whichever rank hosts them; 4 workers on 2 ranks (30
    coordinates padded to 32, blocks of 7 or 8) and 5 workers, one per rank (blocks of 6).
    Every message is the worker's block of values, no indices.  (MARINA's and DCGD's
    theory steps assume independent compressors: an explicit step.)  The runs are in the
    ``launches`` fixture's sweeps of 3 and 6 ranks."""
    a, b = _pair(launches, f"permk-{method}")
    assert (a.config["method"], a.config["compressor"], a.config["workers"]) == (method, "permk", workers)
    assert b.attrs["backend"] == "mpi" and np.array_equal(a.x, b.x)
    for name in ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bytes_up", "bytes_down"):
        assert np.array_equal(a.metrics[name], b.metrics[name]), name
    assert a.config["omega"] == workers - 1
    if method == "dcgd":  # (MARINA's full-sync rounds send dense gradients)
        per_round = np.diff(a.metrics["bytes_up"])[-1] / 5  # 5 rounds between evaluations, all workers
        assert 4 * 30 < per_round < 4 * 30 + 24 * workers  # d float32 values in all, plus the headers

def test_workers_fewer_than_worker_ranks_is_a_one_line_error(tmp_path):
    proc = _train(["--workers", "2", *COMMON], tmp_path / "o.h5", mpi_ranks=4)
    assert proc.returncode != 0
    assert "--workers 2 is fewer than the 3 worker ranks" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_threaded_serial_run_equals_mpi_run_bit_for_bit(tmp_path, monkeypatch):
    """8 workers: the serial runtime's stacked gradients come in two groups on two
    threads (PSMPI_THREADS=2), the MPI ranks compute their own (4 workers on each of 2
    worker ranks: any layout is the unthreaded run, and 3 ranks start faster than 9); the
    same run."""
    args = ["--method", "ef21", "--compressor", "topk:2", *COMMON, "--workers", "8"]
    monkeypatch.setenv("PSMPI_THREADS", "2")
    _check(_train(args + ["--backend", "serial"], tmp_path / "s.h5"))
    monkeypatch.delenv("PSMPI_THREADS")
    _check(_train(args, tmp_path / "m.h5", mpi_ranks=3))
    a, b = read_result(str(tmp_path / "s.h5")), read_result(str(tmp_path / "m.h5"))
    assert np.array_equal(a.x, b.x) and a.metrics["iteration"][-1] == 40
    assert np.array_equal(a.metrics["grad_norm_sq"], b.metrics["grad_norm_sq"])


def test_mpi_float64_values_equal_serial(launches):
    """ef21 topk:3, 2 workers, float64 values: serial against mpirun -n 3 (in the ``launches`` sweep)."""
    a, b = _pair(launches, "float64")
    assert a.config["value_dtype"] == "float64" and b.attrs["backend"] == "mpi"
    assert np.array_equal(a.x, b.x)
    # float64 values cost twice the value bytes of float32 ones: more bits than the float32 run below
    c = psmpi.train(None, method="ef21", compressor="topk:3", workers=2, backend="serial", quiet=True, **COMMON_OPTS)
    assert c.config["value_dtype"] == "float32"
    assert a.metrics["bits_up_per_worker"][-1] > c.metrics["bits_up_per_worker"][-1]

def test_mpi_equals_serial_with_the_host_fused_ef_step(launches):
    """EF21 / Top-1 % at d = 40,000, where the step never writes target - g: mpirun -n 3 (2 and 1
    workers a rank) gives the serial iterates bit for bit."""
    a, b = _pair(launches, "fused-ef")
    assert a.x.shape == (40_000,) and b.attrs["backend"] == "mpi"
    assert a.x.tobytes() == b.x.tobytes()
    assert np.array_equal(a.metrics["grad_norm_sq"], b.metrics["grad_norm_sq"])


def test_mpi_backend_with_one_rank_is_a_one_line_error(tmp_path):
    proc = _train(["--backend", "mpi", "--iters", "5"], tmp_path / "x.h5", mpi_ranks=1)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("psmpi:")]
    assert lines == [lines[0]] and "mpirun -n 1 starts no worker rank" in lines[0]
    assert "Traceback" not in proc.stderr


def test_mpirun_with_one_rank_does_not_fall_back_to_the_serial_runtime(tmp_path):
    proc = _train(["--iters", "5"], tmp_path / "x.h5", mpi_ranks=1)
    assert proc.returncode == 2
    assert "mpirun -n 1 starts no worker rank" in proc.stderr
    assert not (tmp_path / "x.h5").exists()


def test_mpi_resume_past_iters_or_with_another_config_is_an_error_on_every_rank(tmp_path):
    """A checkpoint taken at round 20 resumed with --iters 10 used to hang the workers forever.
    (3 ranks: two worker ranks that must not hang are enough, and each launch starts a rank
    fewer than with 4.  The checkpoint comes from the serial runtime in this process, the
    same run as under MPI: the launches are the resumes.)"""
    out = tmp_path / "r.h5"
    base = ["--method", "ef21", "--dataset", "breast-cancer", "--quiet", "--checkpoint-every", "20"]
    psmpi.train(None, method="ef21", dataset="breast-cancer", quiet=True, checkpoint_every=20, iters=30, workers=2,
                backend="serial", out=str(out))
    assert (tmp_path / "r.h5.ckpt").exists()
    t0 = time.time()
    proc = _train(base + ["--iters", "10", "--resume"], out, mpi_ranks=3, timeout=60)
    assert proc.returncode == 2 and time.time() - t0 < 30
    assert proc.stderr.count("psmpi: error: cannot resume") == 1
    assert "past --iters 10" in proc.stderr
    proc = _train(base + ["--iters", "30", "--resume", "--seed", "5"], out, mpi_ranks=3, timeout=60)
    assert proc.returncode == 2 and "option 'seed' was 0, now 5" in proc.stderr
    proc = _train(base + ["--iters", "30", "--resume"], out, mpi_ranks=3, timeout=60)
    _check(proc)


def test_bad_option_under_mpi_is_reported_once_by_rank_0(tmp_path):
    proc = _train(["--method", "nope"], tmp_path / "x.h5", mpi_ranks=3)
    assert proc.returncode != 0
    assert proc.stderr.count("psmpi: error: unknown method 'nope'") == 1, proc.stderr[-3000:]


def test_killing_a_worker_ends_the_whole_job_quickly(tmp_path):
    """SIGKILL one worker mid-run: mpirun must exit non-zero within seconds, no rank left hanging."""
    out = tmp_path / "k.h5"
    cmd = mpirun() + ["-n", "4", sys.executable, "-m", "psmpi", "train", "--method", "ef21", "--iters", "1000000",
                      "--eval-every", "1000", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        victim = None
        deadline = time.time() + 60
        while victim is None and time.time() < deadline:
            time.sleep(0.5)
            victim = _find_rank_pid(proc.pid, rank=2)
        assert victim is not None, "could not find the rank-2 process"
        time.sleep(1.0)  # let it get into the round loop
        assert proc.poll() is None, "job ended before the kill"
        t0 = time.time()
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=30)
        elapsed = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert elapsed < 15, f"job took {elapsed:.1f}s to end after the kill"
    assert not out.exists()
    assert _find_rank_pid(proc.pid, rank=0) is None


def test_exception_on_a_worker_aborts_the_world_with_its_message(tmp_path, monkeypatch):
    """A worker raising mid-run: one message naming that rank, non-zero exit, nobody hangs."""
    script = tmp_path / "boom.py"
    script.write_text(
        "import sys\n"
        "from mpi4py import MPI\n"
        "import psmpi.methods.ef21 as ef\n"
        "orig = ef.EF21.worker_step\n"
        "def step(self, ctx, st, x):\n"
        "    if MPI.COMM_WORLD.rank == 2 and ctx.round == 5:\n"
        "        raise RuntimeError('injected failure')\n"
        "    return orig(self, ctx, st, x)\n"
        "ef.EF21.worker_step = step\n"
        "from psmpi.cli import main\n"
        "sys.argv = ['psmpi', 'train', '--iters', '100000', '--quiet', '--out', sys.argv[1]]\n"
        "main()\n")
    t0 = time.time()
    proc = subprocess.run(mpirun() + ["-n", "4", sys.executable, str(script), str(tmp_path / "b.h5")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert time.time() - t0 < 60
    assert "psmpi: error on rank 2 (worker 1): RuntimeError: injected failure" in proc.stderr


def _find_rank_pid(launcher_pid, rank):
    """PID of the process with OMPI_COMM_WORLD_RANK=rank among the launcher's descendants."""
    for pid in _descendants(launcher_pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return pid
    return None


def _descendants(pid):
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children = {}
    for p, pp in zip(out[::2], out[1::2]):
        children.setdefault(int(pp), []).append(int(p))
    stack, seen = [pid], []
    while stack:
        for c in children.get(stack.pop(), []):
            seen.append(c)
            stack.append(c)
    return seen


def test_neural_network_mpi_run_equals_serial_run_bit_for_bit(launches):
    """An MLP on digits (psmpi[torch]): 4 workers on 2 worker ranks against the serial runtime
    (in the ``launches`` sweep of 3 ranks)."""
    _needs_torch(launches)
    a, b = _pair(launches, "mlp-sgdm")
    assert (a.config["problem"], b.attrs["backend"], b.attrs["n_workers"]) == ("mlp", "mpi", 4)
    assert np.array_equal(a.x, b.x)
    for name in ("loss", "train_accuracy", "test_loss", "test_accuracy", "samples"):
        assert np.array_equal(a.metrics[name], b.metrics[name]), name
    assert a.x.size > 9000 and a.config["x0"] == "init"


def test_powersgd_with_ef14_on_an_mlp_under_mpi_equals_the_serial_run_bit_for_bit(launches):
    """PowerSGD (its error feedback: ef14) on an MLP on digits: 4 workers on 2 worker ranks,
    each with its own warm-started Q, against the serial runtime (in the ``launches`` sweep
    of 3 ranks)."""
    _needs_torch(launches)
    a, b = _pair(launches, "mlp-powersgd")
    assert (a.config["method"], a.config["compressor"], b.attrs["backend"]) == ("ef14", "powersgd:2", "mpi")
    assert np.array_equal(a.x, b.x)
    for name in ("loss", "grad_norm_sq", "train_accuracy", "bytes_up"):
        assert np.array_equal(a.metrics[name], b.metrics[name]), name
    assert a.metrics["loss"][-1] < a.metrics["loss"][0]
    assert a.metrics["bytes_up"][-1] < 0.15 * 20 * 4 * 4 * a.x.size  # far below dense float32 messages


def test_resume_with_several_workers_per_rank_equals_the_uninterrupted_run(tmp_path):
    """5 workers on 2 worker ranks: the checkpoint holds every worker's state, the resumed
    run scatters them back to the ranks that host them.  (The uninterrupted run is the
    serial one, in this process: the two runtimes give the same run bit for bit.)"""
    base = ["--method", "ef21-sgdm", "--compressor", "topk:2", "--batch-size", "4", "--eval-every", "5", "--quiet",
            "--workers", "5", "--seed", "3"]
    out = tmp_path / "r.h5"
    _check(_train(base + ["--iters", "30", "--checkpoint-every", "20"], out, mpi_ranks=3))
    _check(_train(base + ["--iters", "60", "--resume"], out, mpi_ranks=3))
    a = psmpi.train(None, method="ef21-sgdm", compressor="topk:2", batch_size=4, eval_every=5, quiet=True, workers=5,
                    seed=3, iters=60, backend="serial")
    b = read_result(str(out))
    assert b.attrs["backend"] == "mpi"
    assert np.array_equal(a.x, b.x)
    for name in ("iteration", "grad_norm_sq", "bytes_up", "bits_up_by_worker", "samples"):
        assert np.array_equal(a.metrics[name], b.metrics[name]), name


def test_every_method_on_an_mlp_mpi_run_equals_serial_run_bit_for_bit(launches):
    """Every registered method on a tiny MLP (mlp:4 on digits, d = 310) with a test set and the
    default evaluation subset: 3 workers on 2 worker ranks (mpirun -n 3) against the serial
    runtime, all in the ``launches`` sweep of 3 ranks, so torch is imported once per rank."""
    _needs_torch(launches)
    for name in REGISTRY:
        a, b = _pair(launches, f"mlp4-{name}")
        assert a.config["method"] == b.config["method"] == name
        assert (a.attrs["backend"], b.attrs["backend"]) == ("serial", "mpi")
        assert a.config["eval_rows"] == 1024 and a.x.size == 310
        assert np.array_equal(a.x, b.x), name
        for metric in ("grad_norm_sq", "loss", "train_accuracy", "test_loss", "test_accuracy", "bytes_up", "samples"):
            assert np.array_equal(a.metrics[metric], b.metrics[metric]), (name, metric)
        assert a.metrics["bytes_up"][-1] > 0 and a.metrics["loss"][-1] != a.metrics["loss"][0]  # it trained
