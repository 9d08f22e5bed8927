"""`psmpi data convert | info | fetch`, well-known names in the data directory."""
from __future__ import annotations

import bz2
import functools
import http.server
import json
import os
import socket
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_svmlight_file

from conftest import libsvm_file
from psmpi.cli import main
from psmpi.data import DataError, open_dataset

SMALL = "".join(f"{'+1' if i % 3 else '-1'} {1 + i % 5}:{0.5 + i} {7 + i % 2}:1\n" for i in range(40))


def run(*args, env=None):
    return CliRunner().invoke(main, ["data", *args], env=env, catch_exceptions=False)


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "small.txt"
    p.write_text(SMALL)
    return p


def test_convert_then_info(tmp_path, small):
    out = tmp_path / "small.h5"
    r = run("convert", str(small), str(out))
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"wrote {out}: 40 rows x 8 features, 80 nonzeros")
    r = run("info", str(out), "--workers", "3")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "rows       40" in lines and "features   8" in lines and "nonzeros   80" in lines
    assert "density    0.25" in lines
    assert "labels     2 values; -1: 14 (35.0%), 1: 26 (65.0%)" in lines
    table = lines[lines.index("split contiguous across 3 workers:") + 1:]
    assert table[0].split() == ["worker", "rows", "y=-1", "y=1"]
    assert [row.split() for row in table[1:4]] == [["0", "13", "5", "8"], ["1", "13", "4", "9"], ["2", "14", "5", "9"]]


def test_info_json_counts_match_the_split(tmp_path):
    path = libsvm_file("mushrooms")
    spec = str(path) if path else "breast-cancer"
    r = run("info", spec, "-n", "4", "--split", "dirichlet:0.2", "--seed", "3", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert sum(w["rows"] for w in s["workers"]) == s["rows"]
    for name in s["labels"]:
        assert sum(w["labels"][name] for w in s["workers"]) == s["labels"][name]
    assert s["nonzeros"] == open_dataset(spec).nnz


@pytest.mark.parametrize("args,words", [
    (("info", "missing.h5"), "dataset file 'missing.h5' not found"),
    (("info", "{small}", "-n", "41"), "cannot split 40 rows across 41 workers"),
    (("info", "{small}", "--split", "zigzag"), "unknown split 'zigzag'"),
    (("convert", "{bad}", "{out}"), "bad.txt:2: value 'x' is not a number"),
    (("convert", "{small}", "{out}", "--n-features", "3"), "small.txt:1: feature index 7 exceeds --n-features 3"),
])
def test_errors_are_one_line_with_exit_code_2_and_no_output_file(tmp_path, small, args, words):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1:1\n1 2:x\n")
    out = tmp_path / "out.h5"
    r = run(*[a.format(small=small, bad=bad, out=out) for a in args])
    assert r.exit_code == 2
    assert r.stderr.startswith("psmpi: error: ") and words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_well_known_names_resolve_in_the_data_directory(tmp_path, small, monkeypatch):
    monkeypatch.setenv("PSMPI_DATA", str(tmp_path))
    (tmp_path / "mini").write_text(SMALL)
    ds = open_dataset("mini")
    assert ds.n_rows == 40 and ds.name == "mini"
    ds = open_dataset("small")  # small.txt
    assert ds.n_rows == 40
    run("convert", str(small), str(tmp_path / "mini.h5"))
    assert type(open_dataset("mini")).__name__ == "H5Dataset"  # NAME.h5 comes first
    with pytest.raises(DataError, match="`psmpi data fetch a9a` downloads it"):
        open_dataset("a9a")


def test_real_names_through_psmpi_data(monkeypatch):
    if libsvm_file("a9a") is None:
        pytest.skip("../shared/data/libsvm not present")
    monkeypatch.setenv("PSMPI_DATA", str(libsvm_file("a9a").parent))
    ds = open_dataset("a9a")
    assert (ds.n_rows, ds.n_features) == (32561, 123)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/site."""
    site = tmp_path / "site"
    (site / "binary").mkdir(parents=True)
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_downloads_and_converts_from_a_local_server(tmp_path, server):
    site, url = server
    (site / "binary" / "mushrooms").write_text(SMALL)
    (site / "binary" / "real-sim.bz2").write_bytes(bz2.compress(SMALL.encode()))
    dest = tmp_path / "data"
    for name in ("mushrooms", "real-sim"):
        r = run("fetch", name, "--dir", str(dest), "--url-base", url)
        assert r.exit_code == 0, r.output
        assert r.stdout.strip() == f"wrote {dest / name}.h5"
    assert sorted(os.listdir(dest)) == ["mushrooms.h5", "real-sim.h5"]  # no downloads or temporaries left
    X, y = load_svmlight_file(str(site / "binary" / "mushrooms"), dtype=np.float64)
    for name in ("mushrooms", "real-sim"):
        ds = open_dataset(str(dest / f"{name}.h5"))
        assert (ds.read_rows(np.arange(ds.n_rows)) != X).nnz == 0 and np.array_equal(ds.labels, y)
        assert ds.name == name


def test_fetch_missing_file_and_unknown_name(tmp_path, server):
    _, url = server
    r = run("fetch", "a9a", "--dir", str(tmp_path / "d"), "--url-base", url)
    assert r.exit_code == 2 and "HTTP 404" in r.stderr and len(r.stderr.splitlines()) == 1
    assert os.listdir(tmp_path / "d") == []
    r = run("fetch", "no-such-set", "--dir", str(tmp_path / "d"))
    assert r.exit_code == 2 and "unknown dataset 'no-such-set'" in r.stderr


def test_fetch_without_network_says_so_in_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run("fetch", "w8a", "--dir", str(tmp_path), "--url-base", f"http://127.0.0.1:{port}")
    assert r.exit_code == 2
    assert r.stderr.startswith(f"psmpi: error: cannot download http://127.0.0.1:{port}/binary/w8a: ")
    assert "no network?" in r.stderr and len(r.stderr.splitlines()) == 1
    assert os.listdir(tmp_path) == []
    # where a file downloaded by hand must go for --dataset w8a to find it
    assert f"psmpi data convert FILE {tmp_path / 'w8a.h5'}" in r.stderr and f"copy it to {tmp_path / 'w8a'}" in r.stderr
    assert f"--dataset w8a finds it with PSMPI_DATA={tmp_path}" in r.stderr


def test_fetch_list_names_the_catalog():
    r = run("fetch", "--list")
    assert r.exit_code == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert {"a9a", "w8a", "mushrooms", "phishing", "real-sim"} <= set(names)
