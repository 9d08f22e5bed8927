"""The command line as a new user tries it: help, info, a serial training run
with its HDF5 output (SPEC.md), the options that steer a run, and one-line
errors with exit code 2 for bad input."""
from __future__ import annotations

import json
import subprocess

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import psmpi
from psmpi.cli import main

from conftest import psmpi_cmd

METRICS = ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bytes_up", "bytes_down", "wall_time")


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def train(tmp_path, *args, name="run.h5"):
    out = tmp_path / name
    r = invoke("train", "--quiet", "--out", str(out), *args)
    assert r.exit_code == 0, (r.output, r.stderr if hasattr(r, "stderr") else "", r.exception)
    return out


def read(path):
    with h5py.File(path, "r") as f:
        metrics = {k: f["metrics"][k][()] for k in f["metrics"]}
        attrs = dict(f.attrs)
        x = f["x"][()]
    return metrics, attrs, x


# ------------------------------------------------------------------- help ---
def test_top_level_help_lists_the_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("train", "info"):
        assert cmd in r.output


def test_train_help_documents_every_option_of_the_spec():
    r = invoke("train", "--help")
    assert r.exit_code == 0
    for opt in ("--config", "--method", "--compressor", "--problem", "--dataset", "--split", "--lam", "--gamma",
                "--gamma-factor", "--eta", "--batch-size", "--init-batch-size", "--iters", "--tol", "--x0", "--seed",
                "--eval-every", "--out", "--backend", "--workers", "--device", "--value-dtype", "--quiet"):
        assert opt in r.output, opt


def test_info_reports_versions_methods_and_compressors():
    r = invoke("info")
    assert r.exit_code == 0
    assert psmpi.__version__ in r.output
    for word in ("python", "numpy", "ef21-sgdm", "marina", "topk", "qsgd"):
        assert word in r.output


def test_version_option():
    r = invoke("--version")
    assert r.exit_code == 0 and psmpi.__version__ in r.output


# ------------------------------------------------------------- the output ---
def test_train_writes_the_hdf5_contract(tmp_path):
    out = tmp_path / "x.h5"
    r = invoke("train", "--workers", "4", "--iters", "20", "--out", str(out))
    assert r.exit_code == 0, r.output
    m, attrs, x = read(out)
    assert set(METRICS) <= set(m)
    lengths = {len(m[k]) for k in METRICS}
    assert len(lengths) == 1 and lengths.pop() >= 2
    for k in METRICS:
        assert m[k].ndim == 1
    assert m["iteration"].dtype == np.int64 and m["iteration"][0] == 0 and m["iteration"][-1] == 20
    assert np.all(np.diff(m["iteration"]) > 0)
    assert np.all(np.isfinite(m["grad_norm_sq"])) and np.all(m["grad_norm_sq"] >= 0)
    assert np.all(np.diff(m["bytes_up"]) > 0) and np.all(np.diff(m["bytes_down"]) > 0)
    assert np.all(np.diff(m["wall_time"]) >= 0)
    cfg = json.loads(attrs["config"])
    assert cfg["method"] == "ef21" and cfg["workers"] == 4
    assert cfg["gamma_used"] == attrs["gamma"] > 0
    assert attrs["psmpi_version"] == psmpi.__version__
    assert attrs["backend"] == "serial" and int(attrs["n_workers"]) == 4
    assert "mpi_library" in attrs
    assert x.shape == (cfg["dim"],) and np.any(x != 0)


def test_bits_up_per_worker_is_eight_times_bytes_up_over_workers(tmp_path):
    for method, comp in (("ef21", "topk:2"), ("marina", "randk:3"), ("lag", "identity")):
        m, attrs, _ = read(train(tmp_path, "--workers", "5", "--iters", "12", "--eval-every", "3", "--method", method,
                                 "--compressor", comp, name=f"{method}.h5"))
        np.testing.assert_allclose(m["bits_up_per_worker"], 8.0 * m["bytes_up"] / int(attrs["n_workers"]), rtol=1e-15)


def test_topk_run_sends_fewer_bytes_than_dense_gd(tmp_path):
    sparse, _, _ = read(train(tmp_path, "--workers", "4", "--iters", "10", "--compressor", "topk:1", name="a.h5"))
    dense, _, _ = read(train(tmp_path, "--workers", "4", "--iters", "10", "--method", "gd", name="b.h5"))
    grow_s = sparse["bytes_up"][-1] - sparse["bytes_up"][1]
    grow_d = dense["bytes_up"][-1] - dense["bytes_up"][1]
    assert 0 < grow_s < grow_d / 5


# ----------------------------------------------------------------- options ---
def test_x0_from_npy_file_is_the_starting_point(tmp_path):
    x0 = np.linspace(-1, 1, 30)  # breast-cancer (the default dataset) has 30 features
    np.save(tmp_path / "x0.npy", x0)
    # one round with a step far below the rounding of x0's entries leaves x^1 = x^0 exactly
    _, _, x = read(train(tmp_path, "--workers", "3", "--iters", "1", "--gamma", "1e-300", "--x0",
                         str(tmp_path / "x0.npy")))
    np.testing.assert_array_equal(x, x0)
    m0, _, _ = read(train(tmp_path, "--workers", "3", "--iters", "1", "--x0", str(tmp_path / "x0.npy"), name="a.h5"))
    mz, _, _ = read(train(tmp_path, "--workers", "3", "--iters", "1", name="b.h5"))
    assert m0["grad_norm_sq"][0] != mz["grad_norm_sq"][0]


def test_x0_with_wrong_length_is_a_one_line_error(tmp_path):
    np.save(tmp_path / "bad.npy", np.ones(7))
    r = invoke("train", "--workers", "3", "--iters", "2", "--out", str(tmp_path / "o.h5"), "--x0",
               str(tmp_path / "bad.npy"))
    assert_usage_error(r)


def test_explicit_gamma_is_used_and_recorded(tmp_path):
    _, attrs, _ = read(train(tmp_path, "--workers", "3", "--iters", "3", "--gamma", "0.1"))
    assert attrs["gamma"] == 0.1
    assert json.loads(attrs["config"])["gamma_used"] == 0.1


def test_tol_stops_the_run_once_the_gradient_is_small(tmp_path):
    m, attrs, _ = read(train(tmp_path, "--workers", "3", "--iters", "5000", "--method", "gd", "--eval-every", "1",
                             "--tol", "1e-4"))
    assert m["grad_norm_sq"][-1] <= 1e-4 < m["grad_norm_sq"][-2]
    assert m["iteration"][-1] < 5000
    assert attrs["stop_reason"] == "tol"


def test_seed_controls_the_stochastic_run(tmp_path):
    args = ("--workers", "3", "--iters", "10", "--method", "ef21-sgd", "--compressor", "randk:2")
    _, _, a = read(train(tmp_path, *args, "--seed", "1", name="a.h5"))
    _, _, b = read(train(tmp_path, *args, "--seed", "1", name="b.h5"))
    _, _, c = read(train(tmp_path, *args, "--seed", "2", name="c.h5"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_yaml_config_sets_options_and_the_command_line_wins(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: ef21-sgdm\ncompressor: topk:3\nworkers: 3\niters: 4\ngamma-factor: 2\n")
    _, attrs, _ = read(train(tmp_path, "--config", str(cfg), "--iters", "6"))
    c = json.loads(attrs["config"])
    assert (c["method"], c["compressor"], c["workers"], c["iters"]) == ("ef21-sgdm", "topk:3", 3, 6)
    assert c["gamma_used"] == pytest.approx(2 * c["gamma_theory"])


def test_api_and_cli_give_the_same_run(tmp_path):
    m, _, x = read(train(tmp_path, "--workers", "4", "--iters", "15", "--compressor", "topk:2"))
    r = psmpi.train(None, workers=4, iters=15, compressor="topk:2", quiet=True)
    np.testing.assert_array_equal(r.x, x)
    np.testing.assert_array_equal(r.metrics["bytes_up"], m["bytes_up"])


# ------------------------------------------------------------------ errors ---
def assert_usage_error(r):
    err = r.stderr
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("psmpi: error: "), err


@pytest.mark.parametrize("args,needle", [
    (["--method", "foo"], "foo"),
    (["--compressor", "foo"], "foo"),
    (["--compressor", "topk:0"], "topk:0"),
    (["--compressor", "topk:31"], "K must be in [1, d=30]"),
    (["--method", "ef21-sgdm", "--eta", "2"], "eta"),
    (["--method", "marina", "--compressor", "topk:1"], "unbiased"),
    (["--method", "gd", "--compressor", "topk:1"], "identity"),
    (["--gamma", "-1"], "gamma"),
    (["--gamma", "fast"], "gamma"),
    (["--workers", "0"], "workers"),
    (["--batch-size", "0"], "batch"),
    (["--x0", "nope.txt"], "x0"),
    (["--x0", "missing.npy"], "missing.npy"),
    (["--dataset", "no-such-dataset"], "no-such-dataset"),
    (["--split", "diagonal"], "diagonal"),
    (["--dataset", "quad:beznosikov", "--workers", "4"], "3"),
    # the list of issue 7 (validation before any work starts)
    (["--method", "ef21-sgdm", "--eta", "0"], "--eta must be in (0, 1]"),
    (["--gamma", "0"], "--gamma must be positive"),
    (["--workers", "600"], "more workers than rows"),
    (["--dataset", "/nonexistent/file.txt"], "not found"),
    (["--out", "{file}/sub/out.h5"], "cannot write the output file"),
    (["--iters", "-3"], "--iters must be a positive integer"),
    (["--iters", "0"], "--iters must be a positive integer"),
    # an option the method does not use is refused, never ignored (method-layer issue, defect 4)
    (["--method", "ef21", "--batch-size", "1"], "its minibatch version is 'ef21-sgd'"),
    (["--method", "clag", "--batch-size", "4"], "does not use --batch-size"),
    (["--method", "marina", "--batch-size", "4"], "does not use --batch-size"),
    (["--method", "ef21", "--eta", "0.5"], "does not use --eta (used by ef21-sgdm"),
    (["--method", "marina", "--zeta", "2"], "does not use --zeta (used by lag, clag"),
    (["--method", "ef21-sgdm", "--p", "0.5"], "does not use --p (used by"),
    (["--method", "ef21", "--init-batch-size", "8"], "ef21-sgd"),
    (["--method", "ef21-pp", "--participation", "0"], "--participation must be a probability in (0, 1]"),
    (["--method", "ef21-pp", "--participation", "1.5"], "--participation must be a probability in (0, 1]"),
    (["--method", "ef21-pp", "--participation", "4"], "--participation 4 is more than the 3 workers"),
    (["--method", "ef21-pp", "--participation", "4", "--gamma", "0.1"], "--participation 4 is more than the 3 workers"),
    # an output location that cannot be written is found before any work (defect 5)
    (["--out", "/proc/nope/x.h5"], "cannot write the output file /proc/nope/x.h5"),
])
def test_bad_input_is_one_line_error_with_exit_code_2(tmp_path, args, needle):
    (tmp_path / "afile").write_text("a file, not a folder")
    args = [a.replace("{file}", str(tmp_path / "afile")) for a in args]
    r = invoke("train", "--iters", "3", "--workers", "3", "--out", str(tmp_path / "o.h5"), *args)
    assert_usage_error(r)
    assert needle in r.stderr
    assert not (tmp_path / "o.h5").exists()


def test_unknown_key_in_yaml_config_is_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: ef21\nwokers: 3\n")
    r = invoke("train", "--config", str(cfg), "--out", str(tmp_path / "o.h5"))
    assert_usage_error(r)
    assert "wokers" in r.stderr and "workers" in r.stderr  # names the key and suggests the right one


def test_malformed_or_missing_yaml_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [ef21\n")
    for path in (bad, tmp_path / "missing.yaml"):
        r = invoke("train", "--config", str(path), "--out", str(tmp_path / "o.h5"))
        assert r.exit_code == 2 and "Traceback" not in r.output and "Traceback" not in r.stderr


def test_real_process_reports_bad_input_on_stderr_without_traceback(tmp_path):
    p = subprocess.run(psmpi_cmd() + ["train", "--method", "marina", "--compressor", "topk:1", "--iters", "2",
                                      "--out", str(tmp_path / "o.h5")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.strip().startswith("psmpi: error: ") and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr


def test_real_process_help_works():
    p = subprocess.run(psmpi_cmd() + ["--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "train" in p.stdout
