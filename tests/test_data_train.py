"""End to end: training reads the same data from the LIBSVM text and from the converted HDF5."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import psmpi
from conftest import libsvm_file, mpirun
from psmpi.data.convert import convert

COMPARED = ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bytes_up", "bytes_down")


def text_source(tmp_path, name):
    p = libsvm_file(name)
    if p is not None:
        return p
    rng = np.random.default_rng(len(name))  # a generated stand-in with 2 labels
    p = tmp_path / f"{name}.txt"
    p.write_text("".join(f"{i % 2} " + " ".join(f"{j}:{rng.random():.4f}" for j in sorted(rng.choice(60, 6, replace=False) + 1))
                         + "\n" for i in range(400)))
    return p


@pytest.mark.parametrize("name", ["a9a", "mushrooms", "phishing"])
def test_training_on_text_and_on_converted_h5_gives_identical_metrics(tmp_path, name):
    src = text_source(tmp_path, name)
    h5 = tmp_path / f"{name}.h5"
    convert(str(src), str(h5))
    runs = [psmpi.train(dataset=str(path), workers=20, iters=20, quiet=True, method="ef21", compressor="topk:1")
            for path in (src, h5)]
    a, b = (r.metrics for r in runs)
    for k in COMPARED:
        assert np.array_equal(a[k], b[k]), k
    assert np.array_equal(runs[0].x, runs[1].x)
    assert a["grad_norm_sq"][-1] < a["grad_norm_sq"][0]  # it did train


def test_training_by_well_known_name_and_dirichlet_split(tmp_path, monkeypatch):
    src = text_source(tmp_path, "mushrooms")
    convert(str(src), str(tmp_path / "mushrooms.h5"))
    monkeypatch.setenv("PSMPI_DATA", str(tmp_path))
    by_name = psmpi.train(dataset="mushrooms", workers=8, iters=5, quiet=True, split="dirichlet:0.5")
    by_path = psmpi.train(dataset=str(src), workers=8, iters=5, quiet=True, split="dirichlet:0.5")
    assert np.array_equal(by_name.metrics["grad_norm_sq"], by_path.metrics["grad_norm_sq"])
    other = psmpi.train(dataset="mushrooms", workers=8, iters=5, quiet=True, split="contiguous")
    assert not np.array_equal(by_name.metrics["grad_norm_sq"], other.metrics["grad_norm_sq"])


SHARD_SCRIPT = textwrap.dedent("""
    import sys, json
    import numpy as np
    from mpi4py import MPI
    from psmpi.data import load_shard, open_dataset, split_rows
    from psmpi.data import store

    path, splits = sys.argv[1], sys.argv[2:]
    comm = MPI.COMM_WORLD
    read = []
    real = store._read_runs
    def spy(dset, starts, stops):
        read.append((dset.name.lstrip("/"), int((stops - starts).sum())))
        return real(dset, starts, stops)
    store._read_runs = spy
    result = {}
    for split in splits:  # each split from a freshly opened file, its own reads
        read.clear()
        ds = open_dataset(path)
        shard = load_shard(ds, comm.size, comm.rank, split, 5)
        expect = split_rows(ds.n_rows, comm.size, split, 5, ds.labels)[comm.rank]
        nnz = {n: c for n, c in read if n == "data"}
        result[split] = comm.gather({"rows_equal": bool(np.array_equal(shard.rows, expect)),
                                     "nnz_read": nnz.get("data", 0), "nnz": int(shard.A.nnz),
                                     "rows": len(shard.rows), "checksum": float(abs(shard.A).sum())}, 0)
    if comm.rank == 0:
        print(json.dumps(result))
""")

SPLITS = ("contiguous", "shuffle")


@pytest.fixture(scope="module")
def shard_reads(tmp_path_factory):
    """One mpirun -n 3 loads every split's shards of a9a's HDF5 conversion (one launch for all
    the splits): {split: what each rank read}, the text source read by scikit-learn (the
    reference) and the rank count."""
    pytest.importorskip("mpi4py")
    import json

    from sklearn.datasets import load_svmlight_file

    tmp = tmp_path_factory.mktemp("shards")
    src = text_source(tmp, "a9a")
    h5 = tmp / "a.h5"
    convert(str(src), str(h5))
    script = tmp / "shards.py"
    script.write_text(SHARD_SCRIPT)
    n = 3
    proc = subprocess.run([*mpirun(), "-n", str(n), sys.executable, str(script), str(h5), *SPLITS],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    X, _ = load_svmlight_file(str(src), dtype=np.float64)
    return json.loads(proc.stdout.strip().splitlines()[-1]), X, n


@pytest.mark.mpi
@pytest.mark.parametrize("split", SPLITS)
def test_each_mpi_rank_reads_only_its_slice(shard_reads, split):
    import scipy.sparse as sp

    from psmpi.data import split_rows

    reads, X, n = shard_reads
    ranks = reads[split]
    parts = split_rows(X.shape[0], n, split, 5, None)
    assert len(ranks) == n
    for r, rows in zip(ranks, parts):
        assert r["rows_equal"] and r["rows"] == len(rows)
        assert r["nnz_read"] == r["nnz"] == X[rows].nnz  # exactly its own nonzeros left the file
        assert r["checksum"] == pytest.approx(float(abs(sp.csr_matrix(X[rows])).sum()))
    assert sum(r["nnz_read"] for r in ranks) == X.nnz
