"""--eval-rows: evaluations on a fixed seeded subset of each worker's rows (and of the test set).

The subset of worker i is drawn from the stream (seed, 7, i) and the test set's from (seed, 8);
the tests below draw them again with numpy alone and recompute the recorded metrics from them.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import psmpi
from psmpi.cli import main
from psmpi.config import NN_EVAL_ROWS, NN_EVALS, ConfigError

BASE = dict(dataset="breast-cancer", method="ef21", compressor="topk:2", workers=3, iters=30, eval_every=10, seed=4,
            quiet=True)


def drawn(n_rows, m, seed, key):
    """m of n_rows rows, sorted, from the documented stream."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    return np.sort(rng.choice(n_rows, size=m, replace=False))


def shards(workers, seed, split="contiguous"):
    from psmpi.data import class_labels, load_shard, open_dataset

    ds = open_dataset("breast-cancer")
    out = []
    for i in range(workers):
        sh = load_shard(ds, workers, i, split, seed)
        out.append((sh.A, class_labels(sh.labels, ds.classes, True)))
    return out


def test_metrics_are_those_of_each_workers_seeded_subset_and_the_iterates_do_not_change():
    from psmpi.problems import LogReg

    full = psmpi.train(**BASE)
    sub = psmpi.train(eval_rows=100, **BASE)  # 34, 33, 33 rows of the workers' 189, 189, 191
    assert np.array_equal(full.x, sub.x) and sub.config["eval_rows"] == 100
    loss, grad, right = 0.0, 0.0, 0
    for i, (A, b) in enumerate(shards(3, 4)):
        rows = drawn(A.shape[0], [34, 33, 33][i], 4, (7, i))
        p = LogReg(A[rows], b[rows], 0.1)
        f, g = p.value_and_grad(sub.x)
        loss, grad, right = loss + f, grad + g, right + int(np.count_nonzero(b[rows] * (A[rows] @ sub.x) > 0))
    grad /= 3
    assert sub.metrics["loss"][-1] == pytest.approx(loss / 3, rel=1e-12)
    assert sub.metrics["grad_norm_sq"][-1] == pytest.approx(float(grad @ grad), rel=1e-10)
    assert sub.metrics["train_accuracy"][-1] == right / 100
    assert sub.metrics["loss"][-1] != full.metrics["loss"][-1]


def test_a_share_of_at_least_every_workers_rows_is_the_full_evaluation():
    full = psmpi.train(**BASE)
    for rows in (3 * 191, 10_000):  # the largest of the 3 shards has 191 rows
        res = psmpi.train(eval_rows=rows, **BASE)
        for k, v in full.metrics.items():
            if k != "wall_time":
                assert np.array_equal(v, res.metrics[k]), (rows, k)


def test_the_test_set_is_scored_on_its_own_seeded_subset():
    from psmpi.data import class_labels, hold_out, open_dataset
    from psmpi.problems import LogReg

    res = psmpi.train(eval_rows=60, test_fraction=0.25, **BASE)  # 142 test rows -> 60 of them
    ds = open_dataset("breast-cancer")
    _, test = hold_out(ds, 0.25, 4)
    rows = drawn(test.n_rows, 60, 4, (8,))
    A, b = test.read_rows(rows), class_labels(test.labels[rows], ds.classes, True)
    f, _ = LogReg(A, b, 0.1).value_and_grad(res.x)
    assert res.metrics["test_loss"][-1] == pytest.approx(f, rel=1e-12)
    assert res.metrics["test_accuracy"][-1] == np.count_nonzero(b * (A @ res.x) > 0) / 60


def test_defaults_subset_and_sparser_evaluations_for_neural_networks_only():
    pytest.importorskip("torch")
    nn = psmpi.train(problem="mlp:8", dataset="digits", method="ef21-sgdm", gamma=0.1, workers=3, iters=40,
                     quiet=True)
    assert nn.config["eval_rows"] == NN_EVAL_ROWS and nn.config["eval_every"] == 40 // NN_EVALS
    convex = psmpi.train(dataset="breast-cancer", workers=3, iters=400, quiet=True)
    assert convex.config["eval_rows"] == "full" and convex.config["eval_every"] == 2
    full = psmpi.train(problem="mlp:8", dataset="digits", method="ef21-sgdm", gamma=0.1, workers=3, iters=40,
                       quiet=True, eval_rows="full")
    assert np.array_equal(nn.x, full.x)  # 1797 rows: 1024 of them differ from all of them only in the metrics
    assert not np.array_equal(nn.metrics["loss"], full.metrics["loss"])


@pytest.mark.parametrize("args,message", [
    (["--eval-rows", "0"], "--eval-rows must be a positive number of rows or full (got '0')"),
    (["--eval-rows", "many"], "--eval-rows must be a positive number of rows or full (got 'many')"),
    (["--eval-rows", "2", "--workers", "3"], "--eval-rows 2 leaves worker 2 no rows to evaluate on"),
    (["--eval-rows", "5", "--dataset", "quad:identity,d=3", "--method", "gd", "--compressor", "identity"],
     "has no data rows to evaluate a subset of: drop --eval-rows"),
])
def test_bad_eval_rows_are_one_line_errors(tmp_path, args, message):
    r = CliRunner().invoke(main, ["train", "--quiet", "--iters", "3", "--out", str(tmp_path / "o.h5"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.strip().count("\n") == 0


def test_a_user_problem_that_cannot_take_a_subset_refuses_one():
    from psmpi.problems import Quadratic

    class Sum(Quadratic):  # a finite sum of 10 rows that does not implement subset()
        def __init__(self, A):
            super().__init__(A)
            self.rows = 10

    with pytest.raises(ConfigError, match="the problem Sum has no rows to take a subset of; drop --eval-rows"):
        psmpi.train(problems=[Sum(np.eye(2)), Sum(np.eye(2))], method="gd", compressor="identity", gamma=0.1,
                    iters=3, eval_rows=4, quiet=True)
    # a share at least as large as the rows needs no subset
    psmpi.train(problems=[Sum(np.eye(2)), Sum(np.eye(2))], method="gd", compressor="identity", gamma=0.1, iters=3,
                eval_rows=20, quiet=True)
