"""SPARS-AMS follows the draft's Algorithm 1 exactly: checked against an independent
numpy loop on phishing (full local gradients, float64 values on the wire, Top-2)."""
from __future__ import annotations

import numpy as np
import pytest

import psmpi
from psmpi.runtime.common import describe_data, local_problem

from conftest import libsvm_file


def top_k_dense(u, k):
    """Keep the k largest |u_j| (ties: the lowest indices), zero elsewhere."""
    keep = np.lexsort((np.arange(u.size), -np.abs(u)))[:k]
    out = np.zeros_like(u)
    out[keep] = u[keep]
    return out


def reference(problems, rounds, gamma, k, beta1=0.9, beta2=0.999, eps=1e-8, error_feedback=True):
    n, d = len(problems), problems[0].dim
    x, e = np.zeros(d), np.zeros((n, d))
    m, v, vh = np.zeros(d), np.zeros(d), np.zeros(d)
    for _ in range(rounds):
        sent = []
        for i, p in enumerate(problems):
            g = p.value_and_grad(x)[1]
            if error_feedback:
                u = g + e[i]
                c = top_k_dense(u, k)
                e[i] = u - c
            else:
                c = top_k_dense(g, k)
            sent.append(c)
        g_bar = np.zeros(d)
        for c in sent:
            g_bar += c
        g_bar /= n
        m = beta1 * m + (1 - beta1) * g_bar
        v = beta2 * v + (1 - beta2) * (g_bar * g_bar)
        vh = np.maximum(v, vh)
        x = x - gamma * m / np.sqrt(vh + eps)
    return x


@pytest.mark.parametrize("method", ["spars-ams", "ams"])
def test_spars_ams_on_phishing_equals_the_drafts_algorithm_in_numpy(method):
    path = libsvm_file("phishing")
    if path is None:
        pytest.skip("../shared/data/libsvm/phishing.txt not present")
    kw = dict(dataset=str(path), workers=4, compressor="topk:2", batch_size="full", value_dtype="float64",
              gamma=0.01, iters=60, eval_every=20, quiet=True)
    res = psmpi.train(method=method, **kw)
    cfg = psmpi.api.make_config(dict(kw, method=method))
    cfg.workers = 4
    info = describe_data(cfg)
    problems = [local_problem(cfg, info, i) for i in range(4)]
    ref = reference(problems, 60, 0.01, 2, error_feedback=(method == "spars-ams"))
    np.testing.assert_array_equal(res.x, ref)
    assert not np.array_equal(res.x, 0 * ref)


def test_every_spars_ams_round_is_compressed_and_gamma_is_required():
    res = psmpi.train(method="spars-ams", compressor="topk:2", gamma=0.01, iters=5, workers=3, quiet=True,
                      eval_every=1, dataset="breast-cancer")
    per_round = np.diff(res.metrics["bytes_up"])
    assert per_round[0] == per_round[1]  # round 0 sends Top-2 like every other round
    with pytest.raises(psmpi.errors.PsmpiError, match="pass --gamma"):
        psmpi.train(method="spars-ams", iters=5, workers=3, quiet=True)
