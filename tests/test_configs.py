"""Every shipped experiment config runs end to end at reduced size (``psmpi
sweep --smoke``) and its figure is produced; the docs show every experiment."""
from __future__ import annotations

import csv
import os
import re

import pytest
import yaml
from click.testing import CliRunner

from conftest import ROOT, SHARED_LIBSVM, libsvm_file
from psmpi import sweep as sw
from psmpi.cli import main
from psmpi.api import make_config
from psmpi.results import read_result

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
LIBSVM_NAMES = ("phishing", "mushrooms", "a9a", "w8a")
DOCS = ROOT / "docs" / "experiments.md"


@pytest.fixture(autouse=True)
def data_dir(monkeypatch):
    monkeypatch.setenv("PSMPI_DATA", str(SHARED_LIBSVM))
    monkeypatch.delenv("PSMPI_SMOKE", raising=False)


def needs(points) -> list:
    return sorted({str(p.config["dataset"]) for p in points} & set(LIBSVM_NAMES))


def test_there_is_a_config_per_published_experiment():
    names = {c.stem for c in CONFIGS}
    assert {"ef21_vs_ef14", "beznosikov", "ef21_sgd_divergence", "ef21_sgdm_batch", "ef21_sgdm_workers",
            "clag_vs_lag_vs_ef21", "bw_ef21_pp", "bw_ef21_bc", "3pc"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_config_is_a_valid_train_config_and_a_valid_sweep(config):
    data = yaml.safe_load(config.read_text())
    assert isinstance(data.get("sweep"), dict) and "smoke" in data["sweep"], "every config has a sweep with a smoke size"
    make_config(dict(data), str(config))  # what `psmpi train --config` accepts
    full = sw.build(str(config))
    smoke = sw.build(str(config), smoke=True)
    assert len(full.points) >= 2
    assert 1 <= len(smoke.points) <= len(full.points)
    assert max(p.config["iters"] for p in smoke.points) <= 40
    text = config.read_text()
    assert re.search(r"\(20[12]\d\)", text), "the config cites its paper"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_config_runs_end_to_end_at_smoke_size_and_plots(config, tmp_path):
    out = tmp_path / "runs"
    smoke = sw.build(str(config), smoke=True, out_dir=str(out))
    missing = [n for n in needs(smoke.points) if libsvm_file(n) is None]
    if missing:
        pytest.skip(f"LIBSVM data not present: {', '.join(missing)}")
    res = CliRunner().invoke(main, ["sweep", "--config", str(config), "--smoke", "--out-dir", str(out), "-q"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == len(smoke.points)
    assert all(r["status"] in ("ok", "tol", "diverged") for r in rows), rows
    for p in smoke.points:
        r = read_result(p.out)
        assert r.config["method"] == p.config["method"]
        assert len(r.metrics["grad_norm_sq"]) >= 2
    fig = tmp_path / f"{config.stem}.png"
    res = CliRunner().invoke(main, ["plot", str(out), "-o", str(fig)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert fig.stat().st_size > 10_000


def test_train_accepts_a_config_with_a_sweep_section_and_the_command_line_wins(tmp_path):
    out = tmp_path / "one.h5"
    res = CliRunner().invoke(main, ["train", "--config", str(ROOT / "configs" / "beznosikov.yaml"), "--method", "dcgd",
                                    "--iters", "12", "--out", str(out), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    r = read_result(str(out))
    assert r.config["method"] == "dcgd" and r.metrics["iteration"][-1] == 12
    assert r.config["x0"] == "ones" and r.config["workers"] == 3  # from the config


def test_beznosikov_smoke_shows_dcgd_growing_and_ef21_shrinking(tmp_path):
    out = tmp_path / "runs"
    CliRunner().invoke(main, ["sweep", "--config", str(ROOT / "configs" / "beznosikov.yaml"), "--smoke",
                              "--out-dir", str(out), "-q"], catch_exceptions=False)
    for row in csv.DictReader(open(out / "summary.csv")):
        g = read_result(row["file"]).metrics["grad_norm_sq"]
        if row["method"] == "dcgd":
            assert g[-1] > 10 * g[0]
        else:
            assert g[-1] < g[0]


def test_docs_show_every_config_and_their_figures_exist():
    text = DOCS.read_text()
    for config in CONFIGS:
        assert f"configs/{config.name}" in text, f"{config.name} is not documented in docs/experiments.md"
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert len(figures) >= len(CONFIGS)
    for f in figures:
        path = DOCS.parent / f
        assert path.exists(), f"{f} is linked from docs/experiments.md but missing"
        assert path.stat().st_size < 400_000, f"{f} is too large for the repository"


def test_batch_scripts_keep_their_settings_in_variables():
    scripts = ROOT / "scripts"
    for name in ("slurm_train.sbatch", "slurm_sweep_array.sbatch", "pbs_train.pbs"):
        text = (scripts / name).read_text()
        assert text.startswith("#!/bin/bash")
        for var in ("VENV=", "OUT_DIR=", "CONFIG="):
            assert var in text, f"{name} lacks {var}"
    slurm = (scripts / "slurm_train.sbatch").read_text()
    assert 'SRUN_MPI="${SRUN_MPI:-pmix}"' in slurm and 'srun --mpi="$SRUN_MPI" psmpi train' in slurm
    # the array comes at submission (sbatch --array=...), so the SUMMARY=1 job of the same script is one job
    sweep = (scripts / "slurm_sweep_array.sbatch").read_text()
    assert "#SBATCH --array" not in sweep and "sbatch --parsable --array=0-$((N-1))" in sweep
    assert "mpiexec" in (scripts / "pbs_train.pbs").read_text()


@pytest.mark.parametrize("name", ["slurm_train.sbatch", "slurm_sweep_array.sbatch", "pbs_train.pbs",
                                  "pbs_sweep_array.pbs"])
def test_batch_scripts_are_valid_bash(name):
    import shutil
    import subprocess

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    path = ROOT / "scripts" / name
    assert subprocess.run([bash, "-n", str(path)], capture_output=True).returncode == 0
    assert os.access(path, os.X_OK)
