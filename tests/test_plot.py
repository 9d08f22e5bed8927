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


# ------------------------------------------------- options, styles, mixed runs ---
def captured_figure(monkeypatch):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    captured = {}
    monkeypatch.setattr(plt, "close", lambda fig: captured.setdefault("fig", fig))
    return captured


def test_misspelt_panels_key_is_a_one_line_error_with_a_hint(tmp_path):
    fake_run(tmp_path / "a.h5", 1e-3)
    res = plot(str(tmp_path / "a.h5"), "-o", str(tmp_path / "f.png"), "--panels", "datset")
    assert res.exit_code == 2
    assert res.output.strip() == "psmpi: error: --panels: unknown config key 'datset' (did you mean 'dataset'?)"
    res = plot(str(tmp_path / "a.h5"), "-o", str(tmp_path / "f.png"), "--select", "methd=ef21")
    assert res.exit_code == 2 and "did you mean 'method'" in res.output
    assert not (tmp_path / "f.png").exists()


def test_colour_and_marker_per_method_in_every_panel_line_style_per_setting(tmp_path, monkeypatch):
    captured = captured_figure(monkeypatch)
    paths = [fake_run(tmp_path / f"{m}{gf}{ds}.h5", 1e-3, method=m, gamma_factor=float(gf), dataset=ds)
             for ds in ("a9a", "w8a") for m in ("ef21", "ef14") for gf in (1, 4)]
    runs = plotting.load_runs(paths)
    plotting.figure(runs, str(tmp_path / "f.png"), x="bits", panels="dataset")
    seen = {}
    for ax in captured["fig"].axes:
        for line in ax.get_lines():
            lab = line.get_label()
            method = lab.split(",")[0]
            seen.setdefault(lab, set()).add((line.get_color(), line.get_marker(), str(line.get_linestyle())))
            seen.setdefault(method, set()).add((line.get_color(), line.get_marker()))
    assert all(len(v) == 1 for v in seen.values())  # the same style in both panels
    colour = {m: next(iter(seen[m]))[0] for m in ("EF21", "EF14")}
    assert colour["EF21"] != colour["EF14"]
    styles = {next(iter(seen[f"EF21, {g}x"]))[2] for g in (1, 4)}
    assert len(styles) == 2  # the two steps of a method differ by line style


def test_one_method_gets_one_colour_per_setting_and_no_legend_entry_repeats(tmp_path):
    runs = plotting.load_runs([fake_run(tmp_path / f"{i}.h5", 1e-3, gamma_factor=float(2 ** i)) for i in range(12)])
    st = plotting.styles(runs)
    assert len({c for c, _, _ in st}) == 12
    mixed = plotting.load_runs([fake_run(tmp_path / f"m{m}{i}.h5", 1e-3, method=m, gamma_factor=float(2 ** i))
                                for m in ("ef21", "ef14", "dcgd") for i in range(9)])
    assert len(set(plotting.styles(mixed))) == 27


def test_figsize_font_size_and_any_stored_metric(tmp_path, monkeypatch):
    captured = captured_figure(monkeypatch)
    path = fake_run(tmp_path / "a.h5", 1e-3)
    runs = plotting.load_runs([path])
    plotting.figure(runs, str(tmp_path / "f.png"), x="rounds", y="bytes_up", figsize=(8, 3), font_size=15)
    fig = captured["fig"]
    assert tuple(fig.get_size_inches()) == (8, 3)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "bytes up"
    assert ax.xaxis.label.get_fontsize() == 15
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), runs[0].result.metrics["bytes_up"])
    res = plot(path, "-o", str(tmp_path / "g.png"), "--y", "bytes_upp", "--figsize", "6,2", "--font-size", "9")
    assert res.exit_code == 2 and "no metric 'bytes_upp'" in res.output and "did you mean 'bytes_up'" in res.output
    res = plot(path, "-o", str(tmp_path / "g.png"), "--figsize", "6")
    assert res.exit_code == 2 and "--figsize expects WIDTH,HEIGHT" in res.output
    res = plot(path, "-o", str(tmp_path / "g.png"), "--y", "wall_time", "--figsize", "6,2", "--font-size", "9")
    assert res.exit_code == 0, res.output


def test_smoke_and_full_runs_of_a_point_are_told_apart_not_silently_mixed(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    fake_run(d / "a.h5", 1e-3, iters=30)
    fake_run(d / "b.h5", 1e-6, iters=300)
    runs = plotting.load_runs([d])
    assert plotting.labels(runs) == ["EF21, T=30", "EF21, T=300"]
    res = CliRunner().invoke(main, ["plot", str(d), "-o", str(tmp_path / "f.png")])
    assert res.exit_code == 0
    assert "different --iters (30, 300)" in res.stderr


def test_x_axis_can_be_downlink_or_total_bits(tmp_path):
    import psmpi
    from psmpi.plotting import x_values

    res = psmpi.train(method="ef21", iters=10, workers=3, eval_every=5, quiet=True)
    m = res.metrics
    np.testing.assert_allclose(m["bits_down_per_worker"], 8.0 * m["bytes_down"] / 3)
    np.testing.assert_allclose(x_values(m, "bits_total_per_worker", 3),
                               m["bits_up_per_worker"] + m["bits_down_per_worker"])
    older = {k: v for k, v in m.items() if k != "bits_down_per_worker"}  # a file from before the metric
    np.testing.assert_allclose(x_values(older, "bits_down_per_worker", 3), m["bits_down_per_worker"])
    out = tmp_path / "r.h5"
    psmpi.train(method="ef21", iters=10, workers=3, eval_every=5, quiet=True, out=str(out))
    r = CliRunner().invoke(main, ["plot", str(out), "--x", "bits-total,bits-down", "-o", str(tmp_path / "f.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_y_takes_one_worker_of_a_per_worker_metric(tmp_path):
    out = tmp_path / "r.h5"
    psmpi.train(method="ef21", iters=10, workers=3, eval_every=5, quiet=True, out=str(out))
    r = CliRunner().invoke(main, ["plot", str(out), "--y", "samples[1]", "--x", "rounds", "-o", str(tmp_path / "f.png")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["plot", str(out), "--y", "samples", "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 2 and "did you mean 'samples[" in r.output
