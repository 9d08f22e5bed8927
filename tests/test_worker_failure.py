"""A worker's death does not end the job: --on-worker-failure continue under
``mpirun --with-ft ulfm`` (Open MPI 5's User Level Failure Mitigation).

Failures are made two ways: ``PSMPI_INJECT_FAILURE=kill:W@T`` (the rank hosting
worker W sends itself SIGKILL before its step of round T: the round is exact,
so rows can be compared), and a real ``kill -9`` from outside at an arbitrary
moment.  Every launch has a timeout and runs in its own session, killed whole
at the end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import psmpi
from psmpi.methods import REGISTRY
from psmpi.methods.base import RESEND, RETRACK, Hyper, MasterG
from psmpi.results import read_result

from conftest import mpirun, psmpi_here
from test_mpi import _find_rank_pid

pytestmark = pytest.mark.mpi

PSMPI = [sys.executable, "-m", "psmpi", "train"]
ROWS = ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bytes_up", "bytes_down", "n_workers")


def ulfm() -> list[str]:
    return mpirun() + ["--with-ft", "ulfm"]


def _launch(cmd, env_extra=None, timeout=120):
    """Run a launcher in its own session; kill the whole session if it outlives ``timeout``."""
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, err


def _events(res):
    return json.loads(res.attrs["events"])


def _check_rows_before(full, run, t_fail):
    """Every metric row before the failure round equals the uninterrupted run's."""
    before = full.metrics["iteration"] < t_fail
    assert before.sum() >= 2
    for k in ROWS:
        assert np.array_equal(full.metrics[k][before], run.metrics[k][before]), k


@pytest.mark.parametrize("method,gamma", [("ef21", None), ("ef21-sgdm", 0.01), ("marina", None), ("dcgd", 0.01)])
def test_a_killed_worker_is_survived_with_the_rest(tmp_path, method, gamma):
    opts = {"method": method, "iters": 30, "eval_every": 1, "seed": 3, **({"gamma": gamma} if gamma else {})}
    args = ["-q"] + [a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    out = tmp_path / "run.h5"
    rc, _, err = _launch(ulfm() + ["-n", "6"] + PSMPI + args + ["--out", str(out), "--on-worker-failure", "continue"],
                         {"PSMPI_INJECT_FAILURE": "kill:2@12"})
    assert rc == 0, err[-2000:]
    # the uninterrupted run of the 5 workers: the serial runtime in this process, which gives
    # the MPI runtime's run bit for bit (tests/test_mpi.py), without a second launch
    ref = psmpi.train(None, workers=5, backend="serial", quiet=True, **opts)
    res = read_result(str(out))
    assert (ref.config["method"], ref.config["workers"], res.config["workers"]) == (method, 5, 5)
    assert _events(res) == [{"round": 12, "worker": 2, "event": "failed"}]
    assert "worker 2 failed in round 12" in err
    it, nw = res.metrics["iteration"], res.metrics["n_workers"]
    assert (nw[it < 12] == 5).all() and (nw[it >= 12] == 4).all()
    assert res.metrics["grad_norm_sq"][-1] < res.metrics["grad_norm_sq"][0]
    assert res.stop_reason == "iters" and it[-1] == 30
    _check_rows_before(ref, res, 12)
    assert not np.array_equal(ref.x, res.x)  # the survivors' run is a different run from there on
    # the dead worker's bytes stop growing; the survivors' re-synchronisation messages are counted
    by_worker = res.metrics["bits_up_by_worker"]
    assert by_worker[-1, 2] == by_worker[it == 12][0, 2]
    if REGISTRY[method].resync != RESEND:
        d = res.config["dim"]
        jump = res.metrics["bytes_up"][it == 13][0] - res.metrics["bytes_up"][it == 12][0]
        assert jump >= 4 * d * 4  # four survivors sent d values (float64 for g_i, the wire dtype for MARINA)


def test_two_failures_one_by_a_signal_one_by_an_exception(tmp_path):
    out = tmp_path / "run.h5"
    rc, stdout, err = _launch(ulfm() + ["-n", "6"] + PSMPI + [
        "--method", "clag", "--iters", "40", "--eval-every", "1", "--out", str(out), "--on-worker-failure", "continue"],
        {"PSMPI_INJECT_FAILURE": "kill:0@8,raise:3@20"})
    assert rc == 0, err[-2000:]
    res = read_result(str(out))
    assert _events(res) == [{"round": 8, "worker": 0, "event": "failed"}, {"round": 20, "worker": 3, "event": "failed"}]
    assert "RuntimeError: injected failure in round 20" in err  # the raising worker's one line
    nw = res.metrics["n_workers"]
    assert list(np.unique(nw)) == [3, 4, 5] and nw[-1] == 3
    assert "3 of 5 workers took part at the end" in stdout
    assert res.metrics["grad_norm_sq"][-1] < res.metrics["grad_norm_sq"][0]
    recoveries = json.loads(res.attrs["timings"])["recoveries"]
    assert [r["round"] for r in recoveries] == [8, 20]
    assert all(0 <= r["completed"] - r["detected"] < 10 for r in recoveries)


def test_a_rank_hosting_several_workers_takes_them_all(tmp_path):
    out = tmp_path / "run.h5"
    rc, _, err = _launch(ulfm() + ["-n", "4"] + PSMPI + [
        "--method", "ef21", "--workers", "7", "--iters", "20", "--eval-every", "1", "--out", str(out),
        "--on-worker-failure", "continue"], {"PSMPI_INJECT_FAILURE": "kill:4@5"})
    assert rc == 0, err[-2000:]
    res = read_result(str(out))  # 7 workers on 3 ranks: 0-2, 3-4, 5-6
    assert [e["worker"] for e in _events(res)] == [3, 4]
    assert res.metrics["n_workers"][-1] == 5


def test_a_real_kill_minus_9_mid_run(tmp_path):
    out = tmp_path / "run.h5"
    cmd = ulfm() + ["-n", "5"] + PSMPI + ["--method", "ef21", "--iters", "8000", "--eval-every", "250",
                                          "--out", str(out), "-q",
                                          "--on-worker-failure", "continue"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PSMPI_FLUSH_SECONDS="0.2"), start_new_session=True)
    try:
        deadline = time.time() + 90
        while not out.exists():  # the master flushes the file while it runs
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.1)
        pid = _find_rank_pid(proc.pid, 3)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    res = read_result(str(out))
    (ev,) = _events(res)
    assert ev["worker"] == 2 and ev["event"] == "failed" and 0 < ev["round"] < 8000, "killed too late"
    it, nw = res.metrics["iteration"], res.metrics["n_workers"]
    assert (nw[it < ev["round"]] == 4).all() and nw[-1] == 3


def test_the_master_killed_ends_every_worker_quickly_and_the_checkpoint_resumes(tmp_path):
    args = ["--method", "ef21", "--iters", "200000", "--eval-every", "5000", "--seed", "2", "-q"]
    out = tmp_path / "run.h5"
    cmd = ulfm() + ["-n", "5"] + PSMPI + args + ["--out", str(out), "--checkpoint-every", "1000",
                                                 "--on-worker-failure", "continue"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not os.path.exists(f"{out}.ckpt"):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.1)
        time.sleep(0.3)
        os.kill(_find_rank_pid(proc.pid, 0), signal.SIGKILL)
        t0 = time.time()
        _, err = proc.communicate(timeout=30)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0 and took < 10, (proc.returncode, took)
    assert "the master (rank 0) failed" in err
    import h5py

    with h5py.File(f"{out}.ckpt", "r") as f:
        at = int(f.attrs["round"])
    iters = str(at + 300)
    short = [a if a != "200000" else iters for a in args]
    rc, _, err = _launch(mpirun() + ["-n", "5"] + PSMPI + short + ["--out", str(out), "--resume"])
    assert rc == 0, err[-2000:]
    # the uninterrupted run of the 4 workers: the serial runtime in this process (the MPI
    # runtime's run bit for bit, tests/test_mpi.py) instead of another launch
    a = psmpi.train(None, method="ef21", iters=at + 300, eval_every=5000, seed=2, quiet=True, workers=4,
                    backend="serial")
    b = read_result(str(out))
    assert b.attrs["backend"] == "mpi" and b.config["workers"] == 4 and b.metrics["iteration"][-1] == at + 300
    assert np.array_equal(a.x, b.x) and np.array_equal(a.metrics["grad_norm_sq"], b.metrics["grad_norm_sq"])


def test_no_worker_left_exits_non_zero_and_keeps_the_metrics(tmp_path):
    out = tmp_path / "run.h5"
    rc, _, err = _launch(ulfm() + ["-n", "3"] + PSMPI + [
        "--method", "ef21", "--iters", "40", "--eval-every", "1", "--out", str(out), "--on-worker-failure",
        "continue", "-q"], {"PSMPI_INJECT_FAILURE": "kill:0@5,kill:1@9"})
    assert rc == 4, err[-2000:]
    assert "every worker has failed (the last in round 9)" in err
    res = read_result(str(out))
    assert res.stop_reason == "no_workers" and res.metrics["iteration"][-1] == 9
    assert list(res.metrics["n_workers"][:6]) == [2, 2, 2, 2, 2, 1]


def test_a_checkpoint_after_a_failure_resumes_with_the_survivors(tmp_path):
    args = ["--method", "ef21-sgdm", "--gamma", "0.01", "--iters", "50", "--eval-every", "5", "--seed", "1", "-q",
            "--workers", "4"]
    out = tmp_path / "run.h5"
    rc, _, err = _launch(ulfm() + ["-n", "5"] + PSMPI + args + [
        "--out", str(out), "--checkpoint-every", "20", "--on-worker-failure", "continue"],
        {"PSMPI_INJECT_FAILURE": "kill:1@10"})
    assert rc == 0, err[-2000:]
    ref = read_result(str(out))
    # resumed by 4 and by 2 worker ranks, and serially (in this process: no launch needed)
    for i, launch in enumerate((mpirun() + ["-n", "5"], mpirun() + ["-n", "3"], None)):
        again = tmp_path / f"again{i}.h5"
        resume = args + ["--out", str(again), "--resume", f"{out}.ckpt"]
        if launch is None:
            r = psmpi_here(["train", *resume])
            rc, err = r.exit_code, f"{r.output}{r.stderr}{r.exception!r}"
        else:
            rc, _, err = _launch(launch + PSMPI + resume)
        assert rc == 0, err[-2000:]
        res = read_result(str(again))
        assert np.array_equal(res.x, ref.x), launch
        assert np.array_equal(res.metrics["n_workers"], ref.metrics["n_workers"])
        assert _events(res) == _events(ref)


@pytest.mark.parametrize("launch,extra,expect", [
    ("mpirun", [], "needs ULFM enabled at launch: launch with mpirun --with-ft ulfm"),
    ("ulfm", ["--method", "diana"], "method 'diana' cannot re-synchronise after a worker failure"),
    ("ulfm", ["--method", "marina", "--compressor", "permk", "--gamma", "0.1"], "permk splits the work between"),
    ("serial", [], "--on-worker-failure continue applies to the MPI runtime"),
])
def test_continue_where_it_cannot_work_is_one_line_and_exit_2(tmp_path, launch, extra, expect):
    cmd = {"mpirun": mpirun() + ["-n", "3"], "ulfm": ulfm() + ["-n", "3"], "serial": []}[launch]
    rc, _, err = _launch(cmd + PSMPI + ["--iters", "5", "--out", str(tmp_path / "x.h5"),
                                        "--on-worker-failure", "continue", *extra], timeout=90)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("psmpi: error")]
    assert len(set(lines)) == 1 and expect in lines[0], err[-2000:]
    assert not (tmp_path / "x.h5").exists()


def test_abort_stays_the_default_a_dead_worker_ends_the_job(tmp_path):
    rc, _, err = _launch(mpirun() + ["-n", "4"] + PSMPI + ["--iters", "50", "--out", str(tmp_path / "x.h5")],
                         {"PSMPI_INJECT_FAILURE": "kill:1@5"}, timeout=90)
    assert rc != 0


# ------------------------------------------------------------ the method layer ---
def test_every_method_says_how_it_resynchronises_or_refuses():
    for name, cls in REGISTRY.items():
        m = cls()
        if cls.resync:
            m.check_resync()
        else:
            with pytest.raises(Exception, match="cannot re-synchronise"):
                m.check_resync()
    assert REGISTRY["ef21"].resync == RETRACK and REGISTRY["gd"].resync == RESEND
    assert not REGISTRY["diana"].resync


def test_gradient_tracking_resync_is_the_survivors_mean_then_a_step():
    from psmpi.compressors import Dense

    hp = Hyper(3, 0.5)
    rng = np.random.default_rng(0)
    x, gs = rng.normal(size=6), rng.normal(size=(3, 6))
    old = MasterG(x.copy(), rng.normal(size=6))  # includes a dead worker's share
    ms = REGISTRY["ef21"]().master_resync(hp, old, x, [Dense(g) for g in gs], 7)
    assert np.allclose(ms.g, gs.mean(axis=0)) and np.allclose(ms.x, x - 0.5 * gs.mean(axis=0))
    hb = REGISTRY["ef21-hb"]()
    from psmpi.methods.ef21_hb import MasterHB

    hpb = Hyper(3, 0.5, hb_eta=0.9)
    v = rng.normal(size=6)
    ms = hb.master_resync(hpb, MasterHB(x.copy(), rng.normal(size=6), v.copy()), x, [Dense(g) for g in gs], 7)
    assert np.allclose(ms.v, 0.9 * v + gs.mean(axis=0)) and np.allclose(ms.x, x - 0.5 * ms.v)


def test_event_rows_mark_the_first_row_after_each_failure():
    from psmpi.plotting import event_rows

    class R:
        metrics = {"iteration": np.array([0, 5, 10, 15, 20])}
        attrs = {"events": json.dumps([{"round": 7, "worker": 1, "event": "failed"},
                                       {"round": 10, "worker": 2, "event": "failed"}])}

    assert event_rows(R, np.ones(5, dtype=bool)) == [2]
    assert event_rows(R, np.array([1, 1, 0, 1, 1], dtype=bool)) == [3]
