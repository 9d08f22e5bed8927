"""Checkpoint and exact resume, signals, crash-safe outputs, divergence, validation."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from psmpi.results import read_result

from conftest import mpirun, psmpi_here
from test_mpi import _find_rank_pid

PSMPI = [sys.executable, "-m", "psmpi", "train"]
EXACT = ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bytes_up", "bytes_down")


def _same_run(a, b):
    assert np.array_equal(a.x, b.x)
    for k in EXACT:
        assert np.array_equal(a.metrics[k], b.metrics[k]), k


def _cli(args):
    """``psmpi train ARGS`` in this process; it must succeed."""
    r = psmpi_here(["train", *args])
    assert r.exit_code == 0, (r.output, r.stderr, r.exception)


def _wait_for(path, proc, timeout=90):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "process ended"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.2)


@pytest.mark.mpi
@pytest.mark.parametrize("method,compressor", [("ef21-sgdm", "randk:2"), ("clag", "topk:2")])
def test_sigkill_then_resume_under_mpi_equals_uninterrupted_run(tmp_path, method, compressor):
    args = ["--method", method, "--compressor", compressor, "--iters", "3000", "--eval-every", "50", "--quiet",
            "--seed", "5", *(["--batch-size", "2"] if method == "ef21-sgdm" else [])]
    full = tmp_path / "full.h5"
    _cli(args + ["--backend", "serial", "--workers", "3", "--out", str(full)])  # the uninterrupted run, here
    out = tmp_path / "run.h5"
    cmd = mpirun() + ["-n", "4"] + PSMPI + args + ["--out", str(out), "--checkpoint-every", "100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(f"{out}.ckpt", proc)
        time.sleep(0.5)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with h5py.File(f"{out}.ckpt", "r") as f:
        stopped_at = int(f.attrs["round"])
    assert 0 < stopped_at < 3000
    res = subprocess.run(mpirun() + ["-n", "4"] + PSMPI + args + ["--out", str(out), "--resume"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    _same_run(read_result(str(full)), read_result(str(out)))


def test_checkpoint_and_resume_in_the_serial_runtime_is_exact(tmp_path):
    args = ["--method", "ef21-sgd2m", "--compressor", "natural", "--iters", "60", "--eval-every", "7", "--quiet",
            "--workers", "4", "--seed", "1"]
    # the uninterrupted and the checkpointed runs in this process; the resume in a fresh one,
    # so that nothing it continues from can come from anywhere but the checkpoint
    _cli(args + ["--out", str(tmp_path / "full.h5")])
    part = tmp_path / "part.h5"
    _cli(args + ["--iters", "25", "--checkpoint-every", "10", "--out", str(part)])
    with h5py.File(f"{part}.ckpt", "r") as f:
        assert int(f.attrs["round"]) == 20
    subprocess.run(PSMPI + args + ["--out", str(part), "--resume", f"{part}.ckpt"], check=True)
    _same_run(read_result(str(tmp_path / "full.h5")), read_result(str(part)))


@pytest.mark.mpi
def test_sigterm_to_the_ranks_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    """What Slurm does before the time limit: every task gets SIGTERM."""
    out = tmp_path / "t.h5"
    args = ["--iters", "1000000", "--eval-every", "100", "--quiet", "--out", str(out)]
    env = dict(os.environ, PSMPI_FLUSH_SECONDS="0")
    proc = subprocess.Popen(mpirun() + ["-n", "3"] + PSMPI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env)
    try:
        _wait_for(str(out), proc)  # the first flush: the round loop is running
        pids = [p for p in (_find_rank_pid(proc.pid, r) for r in range(3)) if p]
        assert len(pids) == 3
        for p in pids:
            os.kill(p, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM at round" in err and "--resume" in err
    res = read_result(str(out))
    assert res.stop_reason == "signal"
    assert res.attrs["stop_message"].startswith("stopped by SIGTERM")
    with h5py.File(f"{out}.ckpt", "r") as f:
        # the stop round is evaluated: the last row is the round of the checkpoint
        assert int(f.attrs["round"]) == res.metrics["iteration"][-1] > 0


def test_sigint_in_the_serial_runtime_checkpoints_and_resume_finishes_exactly(tmp_path):
    args = ["--iters", "400000", "--eval-every", "1000", "--quiet", "--workers", "3", "--method", "ef21"]
    out = tmp_path / "i.h5"
    proc = subprocess.Popen(PSMPI + args + ["--out", str(out)], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PSMPI_FLUSH_SECONDS="0"))
    _wait_for(str(out), proc)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGINT" in err
    with h5py.File(f"{out}.ckpt", "r") as f:
        t = int(f.attrs["round"])
    # finish a short continuation and compare with an uninterrupted run to the same round count
    end = str(t + 30)
    subprocess.run(PSMPI + args + ["--iters", end, "--out", str(out), "--resume"], check=True)
    _cli(args + ["--iters", end, "--out", str(tmp_path / "ref.h5")])  # the uninterrupted run, here
    _same_run(read_result(str(tmp_path / "ref.h5")), read_result(str(out)))


def test_output_file_is_readable_while_the_job_runs(tmp_path):
    out = tmp_path / "live.h5"
    env = dict(os.environ, PSMPI_FLUSH_SECONDS="0.5")
    proc = subprocess.Popen(PSMPI + ["--iters", "1000000", "--eval-every", "50", "--quiet", "--workers", "3",
                                     "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(str(out), proc)
        time.sleep(1.5)
        first = read_result(str(out))
        time.sleep(1.5)
        second = read_result(str(out))
    finally:
        proc.kill()
        proc.wait()
    assert len(second.metrics["iteration"]) > len(first.metrics["iteration"]) > 0
    # a file flushed during the run says so, not "iters"
    assert first.stop_reason == second.stop_reason == "running"
    # and after the kill the last flushed file is still valid
    assert read_result(str(out)).metrics["grad_norm_sq"].size >= len(second.metrics["iteration"])


def test_divergence_stops_with_the_round_and_keeps_metrics(tmp_path):
    out = tmp_path / "d.h5"
    # gradient descent on 1/2||x||^2 with step 3 multiplies x by -2 each round
    proc = subprocess.run(PSMPI + ["--method", "gd", "--gamma", "3", "--workers", "2", "--iters", "1000",
                                   "--dataset", "quad:identity,d=4,noise=0", "--x0", "ones",
                                   "--eval-every", "1", "--quiet", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 3
    assert "diverged at round" in proc.stderr and "Traceback" not in proc.stderr
    res = read_result(str(out))
    assert res.diverged and 0 < res.metrics["iteration"][-1] < 1000


def test_resume_with_another_number_of_workers_is_refused(tmp_path):
    out = tmp_path / "w.h5"
    subprocess.run(PSMPI + ["--iters", "30", "--checkpoint-every", "10", "--workers", "3", "-q", "--out", str(out)],
                   check=True)
    proc = subprocess.run(PSMPI + ["--iters", "30", "--workers", "4", "-q", "--out", str(out), "--resume"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "3 workers" in proc.stderr and "4" in proc.stderr
    proc = subprocess.run(PSMPI + ["--iters", "30", "--workers", "3", "--method", "ef14", "-q", "--out", str(out),
                                   "--resume"], capture_output=True, text=True)
    assert proc.returncode == 2 and "option 'method'" in proc.stderr


def test_bad_input_from_the_command_line_is_one_line_and_exit_code_2(tmp_path):
    """Through a real process (the in-process table of bad inputs is in test_cli_train.py)."""
    proc = subprocess.run(PSMPI + ["--iters", "5", "--method", "ef21-sgdm", "--eta", "1.5", "--out", str(tmp_path / "o.h5")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "psmpi: error: --eta must be in (0, 1] (got 1.5)"
    assert not (tmp_path / "o.h5").exists()


def test_unknown_config_key_suggests_the_nearest(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: ef21\ngama_factor: 2\n")
    proc = subprocess.run(PSMPI + ["--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown key 'gama_factor' (line 2) (did you mean 'gamma-factor'?)" in proc.stderr


def test_malformed_dataset_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("+1 1:0.5 2:abc\n-1 3:1\n")
    proc = subprocess.run(PSMPI + ["--dataset", str(bad), "--workers", "1", "--iters", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "bad.txt" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.mpi
def test_a_corrupted_message_aborts_the_job_naming_the_worker(tmp_path):
    """Rank 2 (worker 1) flips an index byte of its Top-2 message in round 5: the
    master's decoder must refuse it and the whole job must end, naming worker 1."""
    script = tmp_path / "corrupt.py"
    script.write_text(
        "import sys\n"
        "from mpi4py import MPI\n"
        "import psmpi.runtime.driver as driver\n"
        "orig = driver.Worker.round\n"
        "def corrupt(self, x, t):\n"
        "    msg = orig(self, x, t)\n"
        "    if MPI.COMM_WORLD.rank == 2 and t == 5:\n"
        "        msg = msg[:-3]  # truncated: the header promises more bytes\n"
        "    return msg\n"
        "driver.Worker.round = corrupt\n"
        "from psmpi.cli import main\n"
        "sys.argv = ['psmpi', 'train', '--compressor', 'topk:2', '--iters', '50', '--quiet', '--out', sys.argv[1]]\n"
        "main()\n")
    out = tmp_path / "c.h5"
    proc = subprocess.run(mpirun() + ["-n", "4", sys.executable, str(script), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "psmpi: error on rank 0 (master): BadMessage: malformed message from worker 1 in round 5" in proc.stderr
    assert not out.exists()


@pytest.mark.mpi
def test_ctrl_c_to_mpirun_tells_where_the_checkpoint_is_and_records_the_stop_round(tmp_path):
    """Open MPI's launcher stops forwarding the ranks' output on SIGINT; the stop message
    must still reach the user, and the output must end with an evaluation at the stop round."""
    out = tmp_path / "c.h5"
    env = dict(os.environ, PSMPI_FLUSH_SECONDS="0")
    proc = subprocess.Popen(mpirun() + ["-n", "3"] + PSMPI + ["--iters", "1000000", "--eval-every", "500", "--quiet",
                                                              "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=env)
    try:
        _wait_for(str(out), proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert f"checkpoint written to {out}.ckpt; continue with --resume {out}.ckpt" in err, err
    res = read_result(str(out))
    assert res.stop_reason == "signal"
    with h5py.File(f"{out}.ckpt", "r") as f:
        assert int(f.attrs["round"]) == res.metrics["iteration"][-1]
