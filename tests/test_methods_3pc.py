"""The 3PC variants (3pcv1 ... 3pcv5) and EF21-HB, EF21-PAGE: theory steps against the
papers' (A, B) formulas computed here, the special cases in which they are known methods,
refusals, messages, and the problems' minibatch API that EF21-PAGE uses.

The convergence of each method with each compressor of the shared table is checked by
tests/test_methods.py (its table iterates the registry)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

import psmpi
from psmpi.cli import main
from psmpi.compressors import Dense, Empty, Sparse
from psmpi.config import ConfigError
from psmpi.methods import MethodError
from psmpi.methods.base import summed

SMALL = dict(dataset="synthetic:rows=200,features=20", workers=4, lam=0.1, quiet=True, seed=3)  # d = 20


def run(**kw):
    return psmpi.train(None, **{**SMALL, **kw})


def gamma_3pc(r, A, B):
    """The 3PC theorem's step 1/(L_- + L_+ sqrt(B/A)) with L and L_tilde."""
    return 1.0 / (r.config["L"] + r.config["L_tilde"] * math.sqrt(B / A))


def ef21_step(r, alpha):
    theta = 1 - math.sqrt(1 - alpha)
    beta = (1 - alpha) / theta
    return 1.0 / (r.config["L"] + r.config["L_tilde"] * math.sqrt(beta / theta))


# ----------------------------------------------------------------- theory ---
@pytest.mark.parametrize("comp,alpha", [("topk:2", 0.1), ("topk:1", 0.05), ("randk:4", 1 / 5), ("identity", 1.0)])
def test_3pcv1_step_is_A_1_B_1_minus_alpha(comp, alpha):
    r = run(method="3pcv1", compressor=comp, iters=1)
    assert r.gamma == pytest.approx(gamma_3pc(r, 1.0, 1.0 - alpha), rel=1e-12)


@pytest.mark.parametrize("q,omega", [("randk:4", 20 / 4 - 1), ("randk:1", 19.0), ("natural", 1 / 8),
                                     ("qsgd:4", min(20 / 16, math.sqrt(20) / 4))])
def test_3pcv2_step_is_A_alpha_B_1_minus_alpha_times_omega(q, omega):
    r = run(method="3pcv2", compressor="topk:2", compressor2=q, iters=1)
    assert r.gamma == pytest.approx(gamma_3pc(r, 0.1, 0.9 * omega), rel=1e-12)
    assert r.config["compressor2"] == q


def test_3pcv2_with_identity_q_has_B_0_and_takes_one_over_L():
    r = run(method="3pcv2", compressor="topk:2", compressor2="identity", iters=1)
    assert r.gamma == pytest.approx(1.0 / r.config["L"], rel=1e-12)


@pytest.mark.parametrize("zeta", [0.0, 0.5, 4.0, 50.0])
@pytest.mark.parametrize("c1,alpha1", [("topk:1", 0.05), ("topk:4", 0.2), ("identity", 1.0)])
def test_3pcv3_step_is_the_composition_with_clag_minimised_over_s(zeta, c1, alpha1):
    """A = 1 - (1 - alpha)(1 - A1(s)), B = (1 - alpha) B1(s) with CLAG's
    A1(s) = 1 - (1 - alpha1)(1 + s), B1(s) = max{(1 - alpha1)(1 + 1/s), zeta}, every s > 0
    allowed: the smallest B/A is found here on a fine grid."""
    r = run(method="3pcv3", compressor="topk:2", compressor2=c1, zeta=zeta, iters=1)
    alpha = 0.1
    if alpha1 == 1.0:  # LAG inside: A1 = 1, B1 = zeta
        best = (1 - alpha) * zeta
    else:
        s_max = 1 / ((1 - alpha) * (1 - alpha1)) - 1  # A > 0 below it
        s = np.geomspace(1e-7, s_max, 400001)[:-1]
        A = 1 - (1 - alpha) * (1 - (1 - (1 - alpha1) * (1 + s)))
        B = (1 - alpha) * np.maximum((1 - alpha1) * (1 + 1 / s), zeta)
        ok = A > 0
        best = float(np.min(B[ok] / A[ok]))
    assert r.gamma == pytest.approx(1 / (r.config["L"] + r.config["L_tilde"] * math.sqrt(best)), rel=1e-5)


@pytest.mark.parametrize("c1,a1,c2,a2", [("topk:2", 0.1, "topk:1", 0.05), ("topk:1", 0.05, "topk:10", 0.5),
                                         ("randk:4", 1 / 5, "topk:2", 0.1), ("topk:2", 0.1, "identity", 1.0)])
def test_3pcv4_step(c1, a1, c2, a2):
    r = run(method="3pcv4", compressor=c1, compressor2=c2, iters=1)
    abar = 1 - (1 - a1) * (1 - a2)
    A = 1 - math.sqrt(1 - abar)
    B = (1 - abar) / A
    assert r.gamma == pytest.approx(gamma_3pc(r, A, B), rel=1e-12)


@pytest.mark.parametrize("p", [None, 0.1, 0.5, 0.99, 1.0])
def test_3pcv5_step_and_default_p(p):
    kw = {} if p is None else {"p": p}
    r = run(method="3pcv5", compressor="topk:2", iters=1, **kw)
    alpha = 0.1
    p = alpha if p is None else p  # the default p is the compressor's alpha
    assert r.config["p"] == pytest.approx(p)
    A = 1 - math.sqrt(1 - p)
    B = (1 - p) * (1 - alpha) / A
    assert r.gamma == pytest.approx(gamma_3pc(r, A, B), rel=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 0.9])
def test_ef21_hb_heuristic_step_is_ef21_times_one_minus_eta(eta):
    r = run(method="ef21-hb", compressor="topk:2", hb_eta=eta, iters=1)
    assert r.gamma == pytest.approx(ef21_step(r, 0.1) * (1 - eta), rel=1e-12)


def test_ef21_page_step_is_ef21s():
    r = run(method="ef21-page", compressor="topk:2", page_p=0.3, batch_size=4, iters=1)
    assert r.gamma == pytest.approx(ef21_step(r, 0.1), rel=1e-12)


# ---------------------------------------------------------- special cases ---
EXACT = dict(iters=25, value_dtype="float64", gamma=2.0)


def test_3pcv5_with_p_1_is_gd_bit_for_bit():
    """Every round is a sync round: every worker sends grad f_i(x^{t+1}) dense, as GD."""
    gd = run(method="gd", compressor="identity", **EXACT)
    v5 = run(method="3pcv5", compressor="topk:1", p=1.0, **EXACT)
    np.testing.assert_array_equal(v5.x, gd.x)
    assert not np.allclose(gd.x, 0.0)


@pytest.mark.parametrize("method,kw", [
    ("3pcv1", {"compressor": "identity"}),  # grad f_i(x^t) + (grad f_i(x^{t+1}) - grad f_i(x^t))
    ("3pcv2", {"compressor": "identity"}),  # b + (x - b) = x whatever Q did
    ("3pcv4", {"compressor": "topk:1", "compressor2": "identity"}),  # b = x, C1(x - b) = C1(rounding)
    ("3pcv3", {"compressor": "identity", "compressor2": "topk:1", "zeta": 1.0}),
])
def test_variants_that_are_gd_in_exact_arithmetic_match_gd_to_rounding(method, kw):
    gd = run(method="gd", compressor="identity", **EXACT)
    other = run(method=method, **EXACT, **kw)
    np.testing.assert_allclose(other.x, gd.x, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("comp", ["topk:1", "randk:2", "natural"])
def test_3pcv3_with_zero_trigger_is_3pcv4_and_with_a_trigger_that_never_fires_is_ef21(comp):
    common = dict(iters=30, compressor=comp, gamma=0.2)
    v4 = run(method="3pcv4", compressor2="topk:2", **common)
    np.testing.assert_array_equal(run(method="3pcv3", compressor2="topk:2", zeta=0.0, **common).x, v4.x)
    ef21 = run(method="ef21", **common)
    np.testing.assert_array_equal(run(method="3pcv3", compressor2="topk:2", zeta=1e300, **common).x, ef21.x)
    assert not np.array_equal(v4.x, ef21.x)


def test_ef21_hb_with_eta_0_is_ef21_bit_for_bit_and_momentum_changes_the_run():
    common = dict(iters=30, compressor="topk:1", gamma=0.2)
    ef21 = run(method="ef21", **common)
    np.testing.assert_array_equal(run(method="ef21-hb", hb_eta=0.0, **common).x, ef21.x)
    assert not np.array_equal(run(method="ef21-hb", hb_eta=0.5, **common).x, ef21.x)


def test_ef21_hb_master_is_the_heavy_ball_recursion():
    """x^{t+1} = x^t - gamma v^t, v^{t+1} = eta v^t + g^{t+1}: on f = 1/2 ||x||^2 with
    C = identity (g^t = grad f(x^t) = x^t), heavy ball's iterates, computed here."""
    gamma, eta, T = 0.3, 0.7, 15
    r = psmpi.train(None, method="ef21-hb", compressor="identity", hb_eta=eta, gamma=gamma, iters=T,
                    dataset="quad:identity,d=3,noise=0", workers=2, x0="ones", value_dtype="float64", quiet=True)
    x = np.ones(3)
    v = x.copy()
    for _ in range(T):
        x = x - gamma * v
        v = eta * v + x
    np.testing.assert_allclose(r.x, x, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("comp", ["topk:1", "randk:2"])
def test_ef21_page_with_p_1_or_full_batches_is_ef21_with_exact_gradients_bit_for_bit(comp):
    common = dict(iters=30, compressor=comp, gamma=0.2)
    ef21 = run(method="ef21", **common)
    np.testing.assert_array_equal(run(method="ef21-page", page_p=1.0, batch_size=3, **common).x, ef21.x)
    np.testing.assert_array_equal(run(method="ef21-page", page_p=0.2, batch_size="full", **common).x, ef21.x)
    assert not np.array_equal(run(method="ef21-page", page_p=0.2, batch_size=3, **common).x, ef21.x)


def test_ef21_page_estimator_uses_one_minibatch_at_both_points():
    """One worker step of EF21-PAGE on a non-sync round: v^{t+1} - v^t is the minibatch
    gradient difference on the SAME rows, drawn from the worker's stream."""
    from psmpi.compressors import make_compressor
    from psmpi.methods import Hyper, WorkerContext, get_method
    from psmpi.problems import LogReg
    from psmpi.runtime.common import common_rng, worker_rng

    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((30, 5)), np.where(rng.random(30) < 0.5, -1.0, 1.0)
    prob = LogReg(A, b, 0.1)
    m = get_method("ef21-page")
    comp = m.prepare_compressor(make_compressor("identity", 5, "float64"))
    hp = Hyper(1, 0.1, **m.resolve({"page_p": 1e-12, "batch_size": 7}, comp))
    ctx = WorkerContext(0, prob, comp, worker_rng(5, 0), common_rng(5), hp, "float64")
    x0, x1 = rng.standard_normal(5), rng.standard_normal(5)
    ctx.round = 0
    st, _ = m.worker_init(ctx, x0)
    v0 = st.v.copy()
    ctx.round = 1
    st, msg = m.worker_step(ctx, st, x1)
    idx = worker_rng(5, 0).integers(0, 30, 7)  # the worker's stream: the minibatch is its first draw
    expect = v0 + (prob._vg(A[idx], b[idx], x1)[1] - prob._vg(A[idx], b[idx], x0)[1])
    np.testing.assert_allclose(st.v, expect, rtol=1e-13, atol=1e-15)
    assert ctx.samples == 30 + 2 * 7  # the exact initial gradient, then 7 rows at two points


# --------------------------------------------------------------- refusals ---
def _cli(*args):
    return CliRunner().invoke(main, ["train", "--iters", "2", "--workers", "2", "-q", *args])


@pytest.mark.parametrize("args,words", [
    (["--method", "3pcv2", "--compressor2", "topk:1"], ["3pcv2", "unbiased", "topk:1"]),
    (["--method", "3pcv2", "--compressor2", "sign"], ["3pcv2", "unbiased", "sign"]),
    (["--method", "ef21-hb", "--hb-eta", "1"], ["ef21-hb", "below 1"]),
    (["--method", "3pcv1", "--compressor2", "topk:1"], ["3pcv1", "does not use --compressor2"]),
    (["--method", "ef21", "--page-p", "0.5"], ["ef21", "does not use --page-p"]),
    (["--method", "3pcv5", "--p", "0"], ["--p"]),
])
def test_combinations_without_theory_are_one_line_errors_with_exit_2(args, words):
    r = _cli(*args)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and all(w in line for w in words), line


def test_api_refuses_a_biased_q_for_3pcv2():
    with pytest.raises((MethodError, ConfigError)):
        run(method="3pcv2", compressor2="topk:1", iters=1)


# --------------------------------------------------------------- messages ---
def test_summed_message_is_the_sum_on_the_union_of_supports_or_dense():
    a = Sparse(6, np.array([1, 4]), np.array([1.0, 2.0], dtype=np.float32))
    b = Sparse(6, np.array([0, 4]), np.array([0.5, -3.0], dtype=np.float32))
    s = summed(a, b, np.float32)
    assert isinstance(s, Sparse) and list(s.indices) == [0, 1, 4] and s.values.dtype == np.float32
    np.testing.assert_array_equal(s.to_dense(), a.to_dense() + b.to_dense())
    d = summed(a, Dense(np.arange(6, dtype=np.float32)), np.float32)
    assert isinstance(d, Dense)
    np.testing.assert_array_equal(d.to_dense(), a.to_dense() + np.arange(6))
    assert summed(None, a, np.float32) is a and summed(Empty(6), a, np.float32) is a
    assert summed(a, Empty(6), np.float32) is a


def test_3pcv1_sends_dense_vectors_as_gd_does_and_3pcv4_sends_at_most_two_topk():
    common = dict(iters=20, eval_every=20)
    gd = run(method="gd", compressor="identity", **common)
    v1 = run(method="3pcv1", compressor="topk:1", **common)
    assert v1.metrics["bytes_up"][-1] == gd.metrics["bytes_up"][-1]
    one = run(method="ef21", compressor="topk:1", **common)
    v4 = run(method="3pcv4", compressor="topk:1", compressor2="topk:1", **common)
    dense0 = gd.metrics["bytes_up"][-1] / 21  # round 0 (dense, the same in every method) and 20 rounds
    assert one.metrics["bytes_up"][-1] < v4.metrics["bytes_up"][-1] <= 2 * one.metrics["bytes_up"][-1] - dense0


# ------------------------------------------------------------ convergence ---
@pytest.mark.parametrize("method,kw", [
    ("3pcv2", {"compressor": "topk:1", "compressor2": "natural"}),
    ("3pcv2", {"compressor": "topk:2", "compressor2": "randk:4"}),
    ("3pcv3", {"compressor": "topk:1", "compressor2": "topk:2", "zeta": 4.0}),
    ("3pcv4", {"compressor": "topk:2", "compressor2": "topk:2"}),
    ("3pcv5", {"compressor": "topk:1", "p": 0.3}),
])
def test_second_compressor_variants_converge_with_their_theory_step(method, kw):
    r = run(method=method, iters=300, eval_every=30, **kw)
    g = r.metrics["grad_norm_sq"]
    assert np.all(np.isfinite(g)) and g[-1] <= 1e-3 * g[0], (g[0], g[-1])


def test_ef21_page_converges_past_the_noise_floor_of_ef21_sgd_with_the_same_batch():
    """The PAGE estimator's error vanishes as x^t converges (variance reduction); EF21-SGD's
    minibatch noise does not."""
    common = dict(compressor="topk:2", batch_size=4, iters=600, eval_every=60, gamma=0.1)
    page = run(method="ef21-page", page_p=0.1, **common)
    sgd = run(method="ef21-sgd", **common)
    gp, gs = page.metrics["grad_norm_sq"], sgd.metrics["grad_norm_sq"]
    assert gp[-1] < 1e-3 * gp[0], (gp[0], gp[-1])
    assert gp[-1] < 1e-2 * gs[-1], (gp[-1], gs[-1])


# ------------------------------------------------------- problems' minibatch ---
def test_stoch_grad_is_batch_grad_on_minibatch_for_every_problem_bit_for_bit():
    from psmpi.problems import LogReg, Quadratic
    from psmpi.problems.catalog import SkewedNoiseQuadratic
    from psmpi.problems.softmax import Softmax

    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 6))
    probs = [LogReg(A, np.where(rng.random(40) < 0.5, -1.0, 1.0), 0.1),
             Softmax(A, rng.integers(0, 3, 40), 3, 0.1),
             Quadratic(np.eye(6), noise=0.7), Quadratic(np.eye(6)), SkewedNoiseQuadratic(np.eye(6), noise=1.0)]
    for p in probs:
        x = rng.standard_normal(p.dim)
        a = p.stoch_grad(x, np.random.default_rng(9), 5)
        r2 = np.random.default_rng(9)
        b = p.batch_grad(x, p.minibatch(r2, 5))
        np.testing.assert_array_equal(a, b)
