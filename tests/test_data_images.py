"""Image datasets: dense HDF5 rows with an image shape, per-worker reads, fetching mnist/cifar10."""
from __future__ import annotations

import bz2
import os
import socket

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from psmpi.cli import main
from psmpi.data import DataError, open_dataset, split_rows
from psmpi.data import store
from psmpi.data import load_shard
from psmpi.data.images import fetch_mnist, open_images, text_to_images, write_images


def digits_dense():
    ds = open_dataset("digits")
    return ds.read_rows(np.arange(ds.n_rows)).toarray().astype(np.float32), ds.labels


def test_digits_are_8x8_images_from_the_embedded_loader():
    ds = open_images("digits")
    X, y = digits_dense()
    assert ds.image_shape == (1, 8, 8) and (ds.n_rows, ds.n_features) == (1797, 64)
    rows = np.array([9, 2, 2, 1796])
    got = ds.read_dense(rows)
    assert got.dtype == np.float32 and np.array_equal(got, X[rows]) and np.array_equal(ds.labels, y)


def test_written_images_round_trip_and_every_read_returns_exactly_the_rows_asked(tmp_path, monkeypatch):
    X, y = digits_dense()
    path = write_images(str(tmp_path / "dg.h5"), X, y, (1, 8, 8), name="dg")
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "psmpi-dense" and tuple(f.attrs["image_shape"]) == (1, 8, 8)
        assert f["X"].dtype == np.float32 and f["labels"].dtype == np.int64 and f["X"].chunks[1] == 64
    ds = open_images(path)
    assert isinstance(ds, store.H5Dataset) and ds.image_shape == (1, 8, 8) and ds.name == "dg"
    rng = np.random.default_rng(0)
    cases = [np.arange(100, 400), np.array([5, 3, 3, 1796, 0]), rng.choice(1797, 300, replace=False)]
    for rows in cases:
        assert np.array_equal(ds.read_dense(rows), X[rows])
    monkeypatch.setattr(store, "DENSE_SPAN_BYTES", 1)  # scattered rows in one-chunk spans
    for rows in cases[1:]:
        assert np.array_equal(ds.read_dense(rows), X[rows])
    csr = open_dataset(path).read_rows(cases[1])  # the convex problems read the same file as CSR
    assert np.array_equal(csr.toarray(), X[cases[1]].astype(np.float64))


def test_a_worker_shard_holds_its_split_rows_only():
    ds = open_images("digits")
    X, y = digits_dense()
    for split in ("contiguous", "shuffle"):
        rows = split_rows(ds.n_rows, 5, split, 3, ds.labels)[2]
        sh = load_shard(ds, 5, 2, split, seed=3, dense=True)
        assert np.array_equal(sh.rows, rows) and np.array_equal(sh.A, X[rows]) and np.array_equal(sh.labels, y[rows])
        assert ds.image_shape == (1, 8, 8)
    with pytest.raises(DataError, match="out of range"):
        load_shard(ds, 5, 5, dense=True)


def test_non_image_data_and_mismatched_shapes_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no image shape"):
        open_images("breast-cancer")
    X, y = digits_dense()
    with pytest.raises(DataError, match="do not fit"):
        write_images(str(tmp_path / "bad.h5"), X, y, (1, 7, 7))
    with pytest.raises(DataError, match="integers"):
        write_images(str(tmp_path / "bad.h5"), X[:2], [0.5, 1], (1, 8, 8))
    assert os.listdir(tmp_path) == []  # nothing left behind


def pixels_text(rows=5, pixels=784, top=255):
    rng = np.random.default_rng(1)
    lines = []
    for i in range(rows):
        cols = np.sort(rng.choice(pixels, 20, replace=False))
        lines.append(f"{i % 10} " + " ".join(f"{c + 1}:{int(rng.integers(1, top + 1))}" for c in cols))
    return "\n".join(lines) + "\n"


def test_text_pixels_become_scaled_dense_images(tmp_path):
    src = tmp_path / "px.txt"
    src.write_text(pixels_text(rows=3, pixels=48, top=255))
    out = text_to_images(str(src), str(tmp_path / "px.h5"), (3, 4, 4))
    ds = open_images(out)
    dense = ds.read_dense(np.arange(3))
    want = open_dataset(str(src)).read_rows(np.arange(3)).toarray() / 255.0
    assert ds.image_shape == (3, 4, 4) and np.array_equal(dense, want.astype(np.float32))
    src.write_text("1 49:3\n")
    with pytest.raises(DataError, match="beyond the 48 pixels"):
        text_to_images(str(src), str(tmp_path / "px2.h5"), (3, 4, 4))


def test_fetch_mnist_from_a_mirror_gives_dense_28x28_images(tmp_path, monkeypatch):
    site = tmp_path / "site" / "multiclass"
    site.mkdir(parents=True)
    for name, rows in (("mnist", 7), ("mnist.t", 3)):
        (site / f"{name}.bz2").write_bytes(bz2.compress(pixels_text(rows).encode()))
    dest = tmp_path / "data"
    paths = fetch_mnist(str(dest), url_base=f"file://{tmp_path / 'site'}")
    assert paths == [str(dest / "mnist.h5"), str(dest / "mnist.t.h5")]
    assert sorted(os.listdir(dest)) == ["mnist.h5", "mnist.t.h5"]
    monkeypatch.setenv("PSMPI_DATA", str(dest))
    ds = open_images("mnist")
    assert ds.image_shape == (1, 28, 28) and ds.n_rows == 7 and 0 < ds.read_dense([0]).max() <= 1.0
    assert open_dataset("mnist.t").n_rows == 3  # also opens as a plain dataset
    r = CliRunner().invoke(main, ["data", "fetch", "mnist", "--dir", str(tmp_path / "cli"),
                                  "--url-base", f"file://{tmp_path / 'site'}"], catch_exceptions=False)
    assert r.exit_code == 0 and r.stdout.strip() == f"wrote {tmp_path / 'cli' / 'mnist.h5'}"


def test_fetch_cifar10_without_network_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = CliRunner().invoke(main, ["data", "fetch", "cifar10", "--dir", str(tmp_path),
                                  "--url-base", f"http://127.0.0.1:{port}"], catch_exceptions=False)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1
    assert f"cannot download http://127.0.0.1:{port}/multiclass/cifar10.bz2" in r.stderr and "no network?" in r.stderr
    assert os.listdir(tmp_path) == []
