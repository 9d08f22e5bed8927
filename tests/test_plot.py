"""psmpi plot: figures from run outputs, labels from configs, one-line errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

import psmpi
from psmpi import plotting
from psmpi.cli import main
from psmpi.results import Result, write_result

BEZ = dict(compressor="topk:1", dataset="quad:beznosikov", workers=3, x0="ones", iters=20, eval_every=2,
           value_dtype="float64", quiet=True)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Three real runs: EF21 at 1x and 4x, DCGD at 1x (which blows up)."""
    d = tmp_path_factory.mktemp("runs")
    for method, gf in (("ef21", 1), ("ef21", 4), ("dcgd", 1)):
        psmpi.train(BEZ, method=method, gamma_factor=gf, out=str(d / f"{method}_gf{gf}.h5"))
    return d


def plot(*args):
    return CliRunner().invoke(main, ["plot", *args], catch_exceptions=False)


def fake_run(path, final, diverged=False, **config):
    cfg = {"method": "ef21", "compressor": "topk:1", "dataset": "a9a", "gamma_factor": 1.0, "label": None,
           "batch_size": "full", "init_batch_size": "full", "workers": 20, **config}
    n = 5
    g = np.geomspace(1.0, final, n) if math.isfinite(final) else np.array([1.0, 10.0, 1e3, 1e9, np.inf])
    metrics = {"iteration": np.arange(n) * 10, "grad_norm_sq": g, "loss": g, "bits_up_per_worker": np.arange(n) * 100.0,
               "bytes_up": np.arange(n) * 10, "bytes_down": np.arange(n) * 10, "wall_time": np.arange(n) * 0.1}
    stop = "diverged at round 40" if diverged else "iters"
    write_result(str(path), Result(metrics, np.zeros(2), 0.1, cfg, {}, str(path), stop))
    return str(path)


def test_directory_of_runs_makes_a_png_with_one_curve_per_run(runs_dir, tmp_path):
    out = tmp_path / "fig.png"
    res = plot(str(runs_dir), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "3 runs" in res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pdf_output_and_single_x_axis(runs_dir, tmp_path):
    out = tmp_path / "fig.pdf"
    res = plot(str(runs_dir / "ef21_gf1.h5"), str(runs_dir / "dcgd_gf1.h5"), "-o", str(out), "--x", "bits")
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:5] == b"%PDF-"


def test_the_curves_drawn_are_the_runs_metrics(runs_dir, tmp_path, monkeypatch):
    """The y data of each line is ||grad f||^2 and the x data #bits/n, rounds, wall time."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    captured = {}
    monkeypatch.setattr(plt, "close", lambda fig: captured.setdefault("fig", fig))
    runs = plotting.load_runs([runs_dir / "ef21_gf4.h5"])
    plotting.figure(runs, str(tmp_path / "f.png"), x="all")
    axes = captured["fig"].axes
    m = runs[0].result.metrics
    for ax, key in zip(axes, ("bits_up_per_worker", "iteration", "wall_time")):
        line = ax.get_lines()[0]
        np.testing.assert_allclose(line.get_ydata(), m["grad_norm_sq"])
        np.testing.assert_allclose(line.get_xdata(), m[key])
        assert ax.get_yscale() == "log"


def test_missing_file_is_a_one_line_error(tmp_path):
    res = plot(str(tmp_path / "nope.h5"), "-o", str(tmp_path / "f.png"))
    assert res.exit_code == 2
    assert res.output.strip() == f"psmpi: error: {tmp_path / 'nope.h5'}: no such file or directory"


def test_file_that_is_not_hdf5_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    res = plot(str(bad), "-o", str(tmp_path / "f.png"))
    assert res.exit_code == 2
    assert res.output.strip() == f"psmpi: error: {bad}: not an HDF5 file (or unreadable)"


def test_hdf5_without_metrics_is_not_a_run(tmp_path):
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    res = plot(str(other), "-o", str(tmp_path / "f.png"))
    assert res.exit_code == 2 and "not a psmpi run output" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_empty_directory_and_bad_figure_format_are_errors(runs_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = plot(str(empty), "-o", str(tmp_path / "f.png"))
    assert res.exit_code == 2 and "no .h5 run outputs" in res.output
    res = plot(str(runs_dir), "-o", str(tmp_path / "f.jpg"))
    assert res.exit_code == 2 and "must be .png, .pdf or .svg" in res.output
    res = plot(str(runs_dir), "-o", str(tmp_path / "f.png"), "--x", "epochs")
    assert res.exit_code == 2 and "--x must be" in res.output


def test_labels_name_the_method_and_what_differs(tmp_path):
    runs = plotting.load_runs([fake_run(tmp_path / "a.h5", 1e-3, method="ef21", gamma_factor=1.0),
                               fake_run(tmp_path / "b.h5", 1e-3, method="ef21", gamma_factor=4.0),
                               fake_run(tmp_path / "c.h5", 1e-3, method="ef14", gamma_factor=4.0)])
    assert plotting.labels(runs) == ["EF21, 1x", "EF21, 4x", "EF14, 4x"]


def test_a_lone_run_is_labelled_with_method_compressor_and_step(tmp_path):
    runs = plotting.load_runs([fake_run(tmp_path / "a.h5", 1e-3, gamma_factor=2.0)])
    assert plotting.labels(runs) == ["EF21, Top-1, 2x"]


def test_config_label_wins_and_duplicates_are_told_apart(tmp_path):
    runs = plotting.load_runs([fake_run(tmp_path / "a.h5", 1e-3, label="mine", workers=10),
                               fake_run(tmp_path / "b.h5", 1e-3, label="mine", workers=100),
                               fake_run(tmp_path / "c.h5", 1e-3, label="other", workers=100)])
    assert plotting.labels(runs) == ["mine (n=10)", "mine (n=100)", "other"]


def test_method_specific_keys_only_label_the_methods_they_belong_to(tmp_path):
    runs = plotting.load_runs([fake_run(tmp_path / "a.h5", 1e-3, method="clag", zeta=4.0),
                               fake_run(tmp_path / "b.h5", 1e-3, method="ef21", zeta=64.0)])
    assert plotting.labels(runs) == ["CLAG, ζ=4", "EF21"]


def test_best_gamma_keeps_the_smallest_final_gradient_per_setting(tmp_path):
    runs = plotting.load_runs([fake_run(tmp_path / "a.h5", 1e-3, gamma_factor=1.0),
                               fake_run(tmp_path / "b.h5", 1e-9, gamma_factor=4.0),
                               fake_run(tmp_path / "c.h5", 1e-30, diverged=True, gamma_factor=16.0),
                               fake_run(tmp_path / "d.h5", 1e-2, method="ef14", gamma_factor=1.0)])
    kept = plotting.best_gamma(runs)
    assert sorted((r.config["method"], r.config["gamma_factor"]) for r in kept) == [("ef14", 1.0), ("ef21", 4.0)]


def test_select_filters_by_config_values(tmp_path):
    runs = plotting.load_runs([fake_run(tmp_path / "a.h5", 1e-3, gamma_factor=1.0),
                               fake_run(tmp_path / "b.h5", 1e-3, gamma_factor=4.0, method="ef14")])
    assert [r.config["method"] for r in plotting.select(runs, {"gamma_factor": ["4"]})] == ["ef14"]
    with pytest.raises(plotting.PlotError, match="no run matches"):
        plotting.select(runs, {"method": ["marina"]})


def test_directories_list_runs_in_natural_order(tmp_path):
    for gf in (16, 2, 4):
        fake_run(tmp_path / f"method-ef21_gamma_factor-{gf}.h5", 1e-3, gamma_factor=float(gf))
    names = [p.rsplit("-", 1)[1] for p in plotting.expand_paths([tmp_path])]
    assert names == ["2.h5", "4.h5", "16.h5"]


def test_panels_and_diverged_runs_plot(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    fake_run(d / "a.h5", 1e-3, dataset="a9a")
    fake_run(d / "b.h5", 1e-3, dataset="w8a")
    fake_run(d / "c.h5", math.inf, diverged=True, dataset="w8a", method="ef14")
    out = tmp_path / "f.svg"
    res = plot(str(d), "-o", str(out), "--panels", "dataset", "--best-gamma", "--title", "t")
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "(diverged)" in text and "a9a" in text and "w8a" in text


def test_smooth_is_a_running_mean_over_the_last_rows():
    np.testing.assert_allclose(plotting.smooth(np.array([1.0, 2.0, 3.0, 5.0]), 2), [1.0, 1.5, 2.5, 4.0])
    np.testing.assert_allclose(plotting.smooth(np.array([1.0, 3.0]), 1), [1.0, 3.0])
