"""psmpi sweep: grid expansion, running, summary, best setting, job arrays."""
from __future__ import annotations

import csv
import os
import re

import pytest
import yaml
from click.testing import CliRunner

from psmpi import sweep as sw
from psmpi.cli import main
from psmpi.config import ConfigError
from psmpi.results import read_result, write_result

BEZ = {"method": "ef21", "compressor": "topk:1", "dataset": "quad:beznosikov", "workers": 3, "x0": "ones",
       "iters": 30, "eval_every": 5, "value_dtype": "float64"}


def write_config(tmp_path, sweep, **base):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**BEZ, **base, "sweep": sweep}, sort_keys=False))
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, ["sweep", *args], catch_exceptions=False)


# ---------------------------------------------------------------- expansion ---
def test_grid_is_the_product_with_the_first_axis_slowest():
    keys, points = sw.expand({"method": ["ef21", "ef14"], "gamma_factor": [1, 2, 4]})
    assert keys == ["method", "gamma_factor"]
    assert points == [{"method": m, "gamma_factor": g} for m in ("ef21", "ef14") for g in (1, 2, 4)]


def test_union_joins_sub_grids_each_crossed_with_the_top_axes():
    spec = {"gamma_factor": [1, 4],
            "union": [{"method": ["ef21-sgdm"], "batch_size": 1},
                      {"method": ["ef14", "ef21-sgd"], "batch_size": [1, 16]}]}
    keys, points = sw.expand(spec)
    assert keys == ["gamma_factor", "method", "batch_size"]
    assert len(points) == 2 * (1 + 4)
    assert {"gamma_factor": 4, "method": "ef21-sgd", "batch_size": 16} in points
    assert not any(p["method"] == "ef21-sgdm" and p["batch_size"] == 16 for p in points)


def test_duplicate_points_from_overlapping_unions_run_once():
    _, points = sw.expand({"union": [{"method": ["ef21", "ef14"]}, {"method": ["ef21"]}]})
    assert points == [{"method": "ef21"}, {"method": "ef14"}]


def test_unknown_sweep_key_is_a_one_line_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown key 'gamma_factr'.*gamma-factor"):
        sw.expand({"gamma_factr": [1, 2]})


def test_an_axis_cannot_also_be_in_a_union_entry():
    with pytest.raises(ConfigError, match="both an axis and in union"):
        sw.expand({"method": ["ef21"], "union": [{"method": ["ef14"]}]})


def test_parse_grid_converts_numbers_and_keeps_strings():
    assert sw.parse_grid(["gamma-factor=1,2.5", "compressor=topk:1,topk:5%"]) == {
        "gamma_factor": [1, 2.5], "compressor": ["topk:1", "topk:5%"]}
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        sw.parse_grid(["gamma_factor"])


def test_command_line_grid_replaces_the_axis_everywhere_including_unions(tmp_path):
    cfg = write_config(tmp_path, {"gamma_factor": [1, 2, 4],
                                  "union": [{"method": "dcgd"}, {"method": "ef21", "gamma_factor": 8}]})
    with pytest.raises(ConfigError):
        sw.build(cfg)  # gamma_factor both an axis and in a union entry
    s = sw.build(cfg, grid={"gamma_factor": [3]}, out_dir=str(tmp_path / "o"))
    assert [p.values for p in s.points] == [{"method": "dcgd"}, {"method": "ef21"}]
    assert all(p.config["gamma_factor"] == 3 for p in s.points)


def test_smoke_applies_the_smoke_section_and_iters_wins(tmp_path):
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "gamma_factor": [1, 2, 4],
                                  "smoke": {"iters": 7, "gamma_factor": [2], "eval_every": 1}})
    full = sw.build(cfg)
    small = sw.build(cfg, smoke=True)
    assert len(full.points) == 6 and len(small.points) == 2
    assert {p.config["iters"] for p in small.points} == {7}
    assert {p.config["eval_every"] for p in small.points} == {1}
    assert small.keys == ["method"]  # gamma_factor no longer varies
    assert {p.config["iters"] for p in sw.build(cfg, smoke=True, iters=3).points} == {3}


def test_smoke_without_a_section_caps_the_rounds(tmp_path):
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"]}, iters=5000)
    assert {p.config["iters"] for p in sw.build(cfg, smoke=True).points} == {sw.SMOKE_ITERS}


def test_psmpi_smoke_environment_variable_turns_smoke_on(monkeypatch):
    monkeypatch.setenv("PSMPI_SMOKE", "1")
    assert sw.smoke_enabled(False)
    monkeypatch.setenv("PSMPI_SMOKE", "0")
    assert not sw.smoke_enabled(False)


def test_invalid_point_is_reported_before_anything_runs(tmp_path):
    cfg = write_config(tmp_path, {"method": ["ef21", "nosuch"]})
    res = invoke("--config", cfg, "--out-dir", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "sweep point 1 (method=nosuch): unknown method 'nosuch'" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_output_names_are_made_from_the_varying_settings(tmp_path):
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "gamma_factor": [1, 0.5]})
    s = sw.build(cfg, out_dir=str(tmp_path / "o"))
    names = [os.path.basename(p.out) for p in s.points]
    assert names[0] == "method-dcgd_gamma_factor-1.h5"
    assert names[3] == "method-ef21_gamma_factor-0.5.h5"
    assert len(set(names)) == 4


# ---------------------------------------------------------------- running ---
def test_sweep_runs_every_point_writes_outputs_summary_and_names_the_best(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "gamma_factor": [1, 4]})
    res = invoke("--config", cfg, "--out-dir", str(out), "-q")
    assert res.exit_code == 0, res.output
    files = sorted(f for f in os.listdir(out) if f.endswith(".h5"))
    assert len(files) == 4
    r = read_result(str(out / "method-ef21_gamma_factor-4.h5"))
    assert r.config["method"] == "ef21" and r.config["gamma_factor"] == 4
    assert r.metrics["iteration"][-1] == 30
    # DCGD diverges on this example, EF21 converges: the best is EF21 with the larger step
    assert "best: method=ef21 gamma_factor=4" in res.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(row["method"], row["gamma_factor"]) for row in rows] == [
        ("dcgd", "1"), ("dcgd", "4"), ("ef21", "1"), ("ef21", "4")]
    finals = {(row["method"], row["gamma_factor"]): float(row["final_grad_norm_sq"]) for row in rows}
    assert finals[("ef21", "4")] < finals[("ef21", "1")] < finals[("dcgd", "1")]
    md = (out / "summary.md").read_text()
    assert "| method | gamma_factor |" in md and "best: method=ef21 gamma_factor=4" in md


def test_best_by_names_one_best_per_group(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "gamma_factor": [1, 4], "best_by": ["method"]})
    res = invoke("--config", cfg, "--out-dir", str(out), "-q")
    assert "best for method=dcgd: gamma_factor=1" in res.output  # the least divergent DCGD
    assert "best for method=ef21: gamma_factor=4" in res.output


def test_gamma_factors_option_sets_the_step_axis(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"gamma_factor": [1, 2, 4, 8]})
    res = invoke("--config", cfg, "--out-dir", str(out), "--gamma-factors", "1,8", "--iters", "10", "-q")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [row["gamma_factor"] for row in rows] == ["1", "8"]
    assert {row["rounds"] for row in rows} == {"10"}
    g1, g8 = (float(row["gamma"]) for row in rows)
    assert g8 == pytest.approx(8 * g1)


def test_diverged_points_are_never_the_best():
    p = sw.Point(0, {"gamma_factor": 1}, {}, "a.h5")
    q = sw.Point(1, {"gamma_factor": 2}, {}, "b.h5")
    rows = [sw.Row(p, "diverged", final=1e-30), sw.Row(q, "ok", final=1e-3)]
    assert sw.best_rows(rows, []) == [rows[1]]
    assert sw.best_rows([rows[0]], []) == []


def test_a_failing_point_is_recorded_and_the_exit_code_says_so(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"dataset": ["quad:beznosikov", str(tmp_path / "missing.txt")]})
    res = invoke("--config", cfg, "--out-dir", str(out), "-q")
    assert res.exit_code == 2
    assert "1 of 2 points failed" in res.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("error: dataset")


def test_point_runs_one_point_and_summary_only_collects_the_outputs(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"]})
    assert invoke("--config", cfg, "--out-dir", str(out), "--point", "1", "-q").exit_code == 0
    assert sorted(os.listdir(out)) == ["method-ef21.h5"]
    res = invoke("--config", cfg, "--out-dir", str(out), "--summary-only")
    assert res.exit_code == 2 and "1 of 2 points failed or are missing" in res.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [row["status"] for row in rows] == ["missing", "ok"]
    bad = invoke("--config", cfg, "--out-dir", str(out), "--point", "2")
    assert bad.exit_code == 2 and "out of range" in bad.output


def test_resume_reads_existing_outputs_instead_of_running_them(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"]})
    invoke("--config", cfg, "--out-dir", str(out), "--point", "0", "-q")
    first = out / "method-dcgd.h5"
    stamp = first.stat().st_mtime_ns
    res = invoke("--config", cfg, "--out-dir", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert "exists, skipped" in res.output
    assert first.stat().st_mtime_ns == stamp
    assert (out / "method-ef21.h5").exists()


def test_list_and_count_describe_the_points_without_running(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "gamma_factor": [1, 2, 4]})
    assert invoke("--config", cfg, "--count").output.strip() == "6"
    listing = invoke("--config", cfg, "--list", "--out-dir", str(out)).output.splitlines()
    assert len(listing) == 6 and "method=ef21 gamma_factor=4" in listing[5]
    assert not out.exists()


@pytest.mark.parametrize("kind,array,index", [("slurm", "#SBATCH --array=0-3", "$SLURM_ARRAY_TASK_ID"),
                                              ("pbs", "#PBS -J 0-3", "PBS_ARRAY_INDEX")])
def test_array_script_has_one_task_per_point_and_rebuilds_the_same_sweep(tmp_path, kind, array, index):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "gamma_factor": [1, 2]})
    res = invoke("--config", cfg, "--out-dir", str(out), "--array-script", kind, "--grid", "seed=3", "--smoke")
    assert res.exit_code == 0, res.output
    script = next(out.glob("exp.*"))
    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert array in text and index in text
    assert f"--config {os.path.abspath(cfg)}" in text and "--grid seed=3" in text and "--smoke" in text
    assert "--point" in text
    assert not list(out.glob("*.h5"))  # nothing ran
    # the summary is its own script, one job: no array directive, no --point
    summary = next(out.glob("exp-summary.*"))
    assert str(summary) in res.output and str(summary) in text
    stext = summary.read_text()
    assert os.access(summary, os.X_OK)
    assert not [d for d in directives(stext) if ARRAY_FLAG.search(d)]
    assert "--summary-only" in stext and "--point" not in stext and "--grid seed=3" in stext


ARRAY_FLAG = re.compile(r"(--array\b|^-a\b|^-J\b|^-t\b)")
SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def directives(text: str) -> list:
    """The scheduler options of a batch script: '#SBATCH X' and '#PBS X' lines ('##' lines are comments)."""
    out = []
    for line in text.splitlines():
        for tag in ("#SBATCH ", "#PBS "):
            if line.startswith(tag):
                out.append(line[len(tag):].split("#")[0].strip())
    return out


@pytest.mark.parametrize("script", ["slurm_sweep_array.sbatch", "pbs_sweep_array.pbs"])
def test_sweep_array_scripts_carry_no_array_directive_so_the_summary_job_runs_once(script):
    """The array is given at submission; the documented SUMMARY=1 submission of the
    same script gives none, so the summary is one job (not one per grid point)."""
    text = open(os.path.join(SCRIPTS, script)).read()
    assert not [d for d in directives(text) if ARRAY_FLAG.search(d)]
    docs = text + open(os.path.join(SCRIPTS, "..", "docs", "cluster.md")).read()
    summary_lines = [line for line in docs.splitlines() if "SUMMARY=1" in line and ("sbatch " in line or "qsub " in line)]
    assert summary_lines
    for line in summary_lines:
        assert "--array" not in line and " -J " not in line and " -t " not in line, line
    array_lines = [line for line in docs.splitlines() if ("sbatch " in line or "qsub " in line) and "SUMMARY" not in line
                   and os.path.basename(script) in line]
    assert array_lines and all("--array=0-" in line or "-J 0-" in line for line in array_lines)


@pytest.mark.parametrize("script,array_var", [("slurm_sweep_array.sbatch", "SLURM_ARRAY_TASK_ID"),
                                              ("pbs_sweep_array.pbs", "PBS_ARRAY_INDEX")])
def test_a_summary_job_submitted_as_an_array_refuses_to_run(tmp_path, script, array_var):
    import subprocess

    venv, bindir = tmp_path / "venv", tmp_path / "bin"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    bindir.mkdir()
    (bindir / "psmpi").write_text(f"#!/bin/sh\necho \"psmpi $*\" >> {tmp_path}/calls\n")
    (bindir / "psmpi").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "VENV": str(venv), "SUMMARY": "1",
           "OUT_DIR": str(tmp_path / "o"), "CONFIG": "c.yaml"}
    ok = subprocess.run(["bash", os.path.join(SCRIPTS, script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "calls").read_text().count("--summary-only") == 1
    bad = subprocess.run(["bash", os.path.join(SCRIPTS, script)], env={**env, array_var: "3"}, cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "without" in bad.stderr


def test_set_overrides_an_option_for_every_point(tmp_path):
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"]})
    s = sw.build(cfg, overrides={"seed": 5, "iters": 4})
    assert {(p.config["seed"], p.config["iters"]) for p in s.points} == {(5, 4)}


@pytest.mark.mpi
def test_sweep_under_mpi_gives_the_serial_results(tmp_path):
    """Launched with mpirun, every rank walks the grid, each point is an MPI run,
    rank 0 alone writes the outputs and the summary: the same numbers as serial."""
    import subprocess

    from conftest import mpirun, psmpi_cmd

    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"]}, iters=15)
    ser, par = tmp_path / "serial", tmp_path / "mpi"
    assert invoke("--config", cfg, "--out-dir", str(ser), "-q").exit_code == 0
    run = subprocess.run([*mpirun(), "-n", "4", *psmpi_cmd(), "sweep", "--config", cfg, "--out-dir", str(par), "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("best:") == 1  # one report, from rank 0
    for name in ("method-dcgd.h5", "method-ef21.h5"):
        a, b = read_result(str(ser / name)), read_result(str(par / name))
        assert b.attrs["backend"] == "mpi"
        assert list(a.metrics["grad_norm_sq"]) == list(b.metrics["grad_norm_sq"])


def test_options_a_method_does_not_use_do_not_name_its_points(tmp_path):
    """EF21 ignores zeta: its points are not split or named by the zeta of the base config."""
    cfg = write_config(tmp_path, {"union": [{"method": "ef21"}, {"method": "clag", "zeta": [4, 64]}]}, zeta=16)
    s = sw.build(cfg, out_dir=str(tmp_path / "o"))
    assert [p.values for p in s.points] == [{"method": "ef21"}, {"method": "clag", "zeta": 4},
                                            {"method": "clag", "zeta": 64}]
    assert os.path.basename(s.points[0].out) == "method-ef21.h5"


# ------------------------------------------------- resume, smoke and stale outputs ---
def test_smoke_runs_go_to_their_own_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "smoke": {"iters": 5}})
    assert sw.build(cfg).out_dir == os.path.join("results", "sweep-exp")
    assert sw.build(cfg, smoke=True).out_dir == os.path.join("results", "sweep-exp-smoke")
    assert sw.build(cfg, smoke=True, out_dir="mine").out_dir == "mine"


def test_resume_reruns_a_point_whose_output_has_another_configuration(tmp_path):
    """A smoke run in the full sweep's folder: --resume must not reuse its 5-round outputs."""
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "smoke": {"iters": 5}})
    assert invoke("--config", cfg, "--out-dir", str(out), "--smoke", "-q").exit_code == 0
    assert read_result(str(out / "method-ef21.h5")).metrics["iteration"][-1] == 5
    res = invoke("--config", cfg, "--out-dir", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert "exists, skipped" not in res.output
    assert "is not this point (iters: 5 -> 30" in res.output
    assert read_result(str(out / "method-ef21.h5")).metrics["iteration"][-1] == 30
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {row["rounds"] for row in rows} == {"30"}
    again = invoke("--config", cfg, "--out-dir", str(out), "--resume")
    assert again.output.count("exists, skipped") == 2


def test_resume_ignores_options_that_do_not_change_the_run_but_not_eval_every(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["ef21"]})
    assert invoke("--config", cfg, "--out-dir", str(out), "-q").exit_code == 0
    cfg = write_config(tmp_path, {"method": ["ef21"]}, label="mine")
    s = sw.build(cfg, out_dir=str(out), overrides={"checkpoint_every": 7, "backend": "serial"})
    assert sw.read_row(s.points[0]).status == "ok"
    s = sw.build(cfg, out_dir=str(out), overrides={"eval_every": 1})
    assert sw.read_row(s.points[0]).status == "stale: eval_every: 5 -> 1"


def test_resume_reruns_an_unfinished_output(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["ef21"]})
    assert invoke("--config", cfg, "--out-dir", str(out), "-q").exit_code == 0
    point = sw.build(cfg, out_dir=str(out)).points[0]
    r = read_result(point.out)
    r.stop_reason = "running"
    write_result(point.out, r)
    assert sw.read_row(point).status == "stale: unfinished (running)"


def test_summary_only_does_not_count_another_configurations_output(tmp_path):
    out = tmp_path / "o"
    cfg = write_config(tmp_path, {"method": ["dcgd", "ef21"], "smoke": {"iters": 5}})
    assert invoke("--config", cfg, "--out-dir", str(out), "--smoke", "-q").exit_code == 0
    res = invoke("--config", cfg, "--out-dir", str(out), "--summary-only")
    assert res.exit_code == 2 and "2 of 2 points failed or are missing" in res.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert all(row["status"].startswith("stale: iters: 5 -> 30") for row in rows)


def test_a_point_whose_method_ignores_an_axis_is_run_once_and_labelled_without_it(tmp_path):
    """zeta is LAG/CLAG's: with ef21 in the grid its zeta axis would give ef21 twice."""
    cfg = write_config(tmp_path, {"method": ["ef21", "clag"], "zeta": [1, 4]})
    s = sw.build(cfg)
    assert [p.values for p in s.points] == [{"method": "ef21"}, {"method": "clag", "zeta": 1},
                                            {"method": "clag", "zeta": 4}]
    assert [p.index for p in s.points] == [0, 1, 2]


def test_an_axis_no_point_uses_is_a_one_line_error(tmp_path):
    cfg = write_config(tmp_path, {"zeta": [1, 4]}, method="ef21")
    with pytest.raises(ConfigError, match="'zeta' is used by .*clag.*; no point's method uses it"):
        sw.build(cfg)
