"""Per-worker metrics, the on_eval callback, and methods/compressors from other packages."""
from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import psmpi
from psmpi.compressors import REGISTRY as CREG
from psmpi.compressors.identity import Identity
from psmpi.methods import REGISTRY
from psmpi.methods.ef21 import EF21
from psmpi.plugins import load_plugins

BASE = dict(dataset="breast-cancer", workers=3, quiet=True, eval_every=5)


def test_bits_up_by_worker_sums_to_the_total_and_shows_lazy_workers():
    res = psmpi.train(method="clag", compressor="topk:2", iters=40, zeta=2.0, **BASE)
    by = res.metrics["bits_up_by_worker"]
    assert by.shape == (len(res.metrics["iteration"]), 3)
    np.testing.assert_array_equal(by.sum(axis=1), 8 * res.metrics["bytes_up"])
    np.testing.assert_allclose(by.mean(axis=1), res.metrics["bits_up_per_worker"])
    assert np.all(np.diff(by, axis=0) >= 0)


def test_samples_count_the_gradients_each_method_used():
    sgdm = psmpi.train(method="ef21-sgdm", batch_size=4, iters=20, **BASE)
    # B_init = 4 at round 0, then 4 per round for rounds 1..19, counted up to each evaluation
    np.testing.assert_array_equal(sgdm.metrics["samples"][:, 0], 4 * np.array([0, 5, 10, 15, 20]))
    gd = psmpi.train(method="gd", compressor="identity", iters=10, **BASE)
    rows = np.array([189, 189, 191])  # breast-cancer's 569 rows, contiguous split
    np.testing.assert_array_equal(gd.metrics["samples"][-1], 10 * rows)
    assert gd.metrics["samples"].dtype == np.int64


def test_on_eval_receives_every_row_as_it_is_recorded():
    seen = []
    res = psmpi.train(method="ef21", iters=20, on_eval=seen.append, **BASE)
    assert [r["iteration"] for r in seen] == list(res.metrics["iteration"])
    assert seen[-1]["grad_norm_sq"] == res.metrics["grad_norm_sq"][-1]
    assert set(seen[0]) >= {"iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "samples"}


class MyEF(EF21):
    """EF21 under another name, as a user's package would register it.

    worker: as EF21;  master: as EF21;  theory: as EF21."""

    name = "my-ef"


class MyIdentity(Identity):
    name = "my-identity"


def test_methods_and_compressors_of_other_packages_are_found_through_entry_points(monkeypatch):
    mod = types.ModuleType("fake_psmpi_plugin")
    mod.MyEF, mod.MyIdentity, mod.Broken = MyEF, MyIdentity, object
    monkeypatch.setitem(sys.modules, "fake_psmpi_plugin", mod)
    eps = {"psmpi.methods": [EntryPoint("my-ef", "fake_psmpi_plugin:MyEF", "psmpi.methods"),
                             EntryPoint("broken", "fake_psmpi_plugin:Broken", "psmpi.methods")],
           "psmpi.compressors": [EntryPoint("my-identity", "fake_psmpi_plugin:MyIdentity", "psmpi.compressors")]}
    import importlib.metadata as md

    monkeypatch.setattr(md, "entry_points", lambda group: eps.get(group, []))
    try:
        assert load_plugins("psmpi.methods", REGISTRY, psmpi.methods.Method) == ["my-ef"]
        assert load_plugins("psmpi.compressors", CREG, psmpi.compressors.Compressor) == ["my-identity"]
        a = psmpi.train(method="my-ef", compressor="my-identity", iters=10, **BASE)
        b = psmpi.train(method="ef21", compressor="identity", iters=10, **BASE)
        np.testing.assert_array_equal(a.x, b.x)
    finally:
        REGISTRY.pop("my-ef", None)
        CREG.pop("my-identity", None)


def test_a_broken_plugin_is_one_warning_line(monkeypatch, capsys):
    import importlib.metadata as md

    monkeypatch.setattr(md, "entry_points", lambda group: [EntryPoint("bad", "no_such_module_xyz:X", group)])
    assert load_plugins("psmpi.methods", {}, psmpi.methods.Method) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugin bad (psmpi.methods) not loaded" in err


# ------------------------------------------------------------- test sets ---
def test_a_held_out_fraction_adds_test_and_train_accuracy(tmp_path):
    res = psmpi.train(method="ef21", iters=60, test_fraction=0.25, **BASE)
    m = res.metrics
    for k in ("train_accuracy", "test_accuracy", "test_loss"):
        assert m[k].shape == m["iteration"].shape and np.all(np.isfinite(m[k])), k
    assert 0.5 < m["test_accuracy"][-1] <= 1 and 0.5 < m["train_accuracy"][-1] <= 1
    assert m["test_loss"][-1] < m["test_loss"][0]
    # the held-out rows are not trained on: 569 rows, 142 held out, 427 for the 3 workers
    assert m["samples"][-1].sum() == 60 * 427


def test_a_test_file_with_fewer_features_and_the_error_cases(tmp_path):
    from psmpi.data import open_dataset

    ds = open_dataset("breast-cancer")
    A = ds.read_rows(np.arange(100, 200)).toarray()
    with open(tmp_path / "t.txt", "w") as f:  # the last feature left out, as in a9a.t
        for a, y in zip(A, ds.labels[100:200]):
            f.write(f"{y} " + " ".join(f"{j + 1}:{float(v)!r}" for j, v in enumerate(a[:29]) if v) + "\n")
    res = psmpi.train(method="ef21", iters=20, test_dataset=str(tmp_path / "t.txt"), **BASE)
    assert 0.5 < res.metrics["test_accuracy"][-1] <= 1
    with pytest.raises(psmpi.errors.ConfigError, match="not both"):
        psmpi.train(iters=5, test_dataset=str(tmp_path / "t.txt"), test_fraction=0.1, **BASE)
    with pytest.raises(psmpi.errors.ConfigError, match="no data rows to test on"):
        psmpi.train(iters=5, dataset="quad:identity,d=3", method="gd", compressor="identity", test_fraction=0.1,
                    workers=2, quiet=True)
