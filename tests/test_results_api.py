"""psmpi.read_result, Result.to_pandas and psmpi export: run outputs for analysis."""
from __future__ import annotations

import csv
import subprocess
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

import psmpi
from psmpi.cli import main
from psmpi.results import Result

BEZ = dict(compressor="topk:1", dataset="quad:beznosikov", workers=3, x0="ones", iters=20, eval_every=5,
           value_dtype="float64", quiet=True)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    for method in ("ef21", "dcgd"):
        psmpi.train(BEZ, method=method, out=str(d / f"{method}.h5"))
    return d


def test_read_result_is_public_and_gives_metrics_attributes_and_config(runs_dir):
    res = psmpi.read_result(str(runs_dir / "ef21.h5"))
    assert "read_result" in psmpi.__all__
    assert list(res.metrics["iteration"]) == [0, 5, 10, 15, 20]
    assert isinstance(res.metrics["grad_norm_sq"], np.ndarray)
    assert res.config["method"] == "ef21" and res.config["workers"] == 3
    assert res.attrs["backend"] == "serial" and res.stop_reason == "iters"
    assert res.out == str(runs_dir / "ef21.h5") and res.x.shape == (3,)


def test_import_psmpi_does_not_load_h5py():
    code = "import sys, psmpi; print('h5py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_to_pandas_builds_one_row_per_evaluation(runs_dir, monkeypatch):
    seen = {}
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda data: seen.setdefault("data", data)
    monkeypatch.setitem(sys.modules, "pandas", fake)
    res = psmpi.read_result(str(runs_dir / "ef21.h5"))
    data = res.to_pandas()
    flat = {k for k, v in res.metrics.items() if v.ndim == 1}
    per_worker = {f"{k}[{i}]" for k, v in res.metrics.items() if v.ndim == 2 for i in range(v.shape[1])}
    assert per_worker and set(data) == flat | per_worker  # rows x workers metrics: one column per worker
    np.testing.assert_array_equal(data["grad_norm_sq"], res.metrics["grad_norm_sq"])


def test_to_pandas_without_pandas_is_a_one_line_import_error(runs_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError, match=r"^Result.to_pandas\(\) needs pandas: pip install pandas$"):
        psmpi.read_result(str(runs_dir / "ef21.h5")).to_pandas()


def test_real_pandas_frame(runs_dir):
    pytest.importorskip("pandas")
    df = psmpi.read_result(str(runs_dir / "ef21.h5")).to_pandas()
    assert len(df) == 5 and "bits_up_per_worker" in df.columns


def test_per_worker_metrics_become_one_column_per_worker(tmp_path):
    metrics = {"iteration": np.arange(3), "bits_up_by_worker": np.arange(6.0).reshape(3, 2)}
    cols = Result(metrics, np.zeros(1), 0.1, {}).columns()
    assert list(cols) == ["iteration", "bits_up_by_worker[0]", "bits_up_by_worker[1]"]
    np.testing.assert_array_equal(cols["bits_up_by_worker[1]"], [1.0, 3.0, 5.0])


def test_export_writes_the_metrics_of_many_runs_in_long_format(runs_dir, tmp_path):
    out = tmp_path / "sub" / "runs.csv"
    res = CliRunner().invoke(main, ["export", str(runs_dir), "--csv", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 runs, 10 rows" in res.output
    rows = list(csv.DictReader(open(out)))
    assert [r["run"] for r in rows] == ["dcgd"] * 5 + ["ef21"] * 5
    assert {r["method"] for r in rows} == {"dcgd", "ef21"} and {r["workers"] for r in rows} == {"3"}
    ef21 = psmpi.read_result(str(runs_dir / "ef21.h5"))
    got = [float(r["grad_norm_sq"]) for r in rows if r["run"] == "ef21"]
    assert got == list(ef21.metrics["grad_norm_sq"])  # exact: floats written in full
    assert rows[0]["file"] == str(runs_dir / "dcgd.h5") and "iteration" in rows[0] and "gamma_used" in rows[0]


def test_export_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(main, ["export", str(tmp_path / "nope.h5"), "--csv", str(tmp_path / "o.csv")])
    assert res.exit_code == 2 and res.output.startswith("psmpi: error: ") and len(res.output.splitlines()) == 1
    res = CliRunner().invoke(main, ["export", str(tmp_path)])
    assert res.exit_code == 2 and "--csv" in res.output
