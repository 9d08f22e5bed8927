"""Problems: gradients against finite differences, unbiased minibatch
gradients, and smoothness constants that really bound the curvature."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from psmpi.problems import LogReg, Quadratic, Softmax


def data(m=40, f=6, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, f)) * rng.lognormal(0, 0.5, f)
    if sparse:
        A[rng.random((m, f)) < 0.6] = 0.0
        A = sp.csr_matrix(A)
    return A, rng


def logreg(seed=0, sparse=False, lam=0.1):
    A, rng = data(seed=seed, sparse=sparse)
    b = rng.choice([-1.0, 1.0], A.shape[0])
    return LogReg(A, b, lam)


def softmax(seed=0, sparse=False, lam=0.1, C=4):
    A, rng = data(seed=seed, sparse=sparse)
    return Softmax(A, rng.integers(0, C, A.shape[0]), C, lam)


def quadratic(seed=0, d=6, noise=0.0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((d, d))
    return Quadratic(M + M.T, rng.standard_normal(d), noise=noise)


PROBLEMS = {
    "logreg": lambda: logreg(),
    "logreg-sparse": lambda: logreg(1, sparse=True),
    "logreg-lam0": lambda: logreg(2, lam=0.0),
    "softmax": lambda: softmax(),
    "softmax-sparse": lambda: softmax(1, sparse=True),
    "quadratic": lambda: quadratic(),
}


def fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def fd_hessian(grad, x, h=1e-5):
    """Symmetrised central-difference Hessian from exact gradients."""
    H = np.zeros((x.size, x.size))
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        H[:, j] = (grad(x + e) - grad(x - e)) / (2 * h)
    return (H + H.T) / 2


@pytest.mark.parametrize("name", PROBLEMS)
def test_gradient_matches_central_finite_differences(name):
    p = PROBLEMS[name]()
    rng = np.random.default_rng(7)
    for scale in (0.0, 0.3, 2.0):
        x = scale * rng.standard_normal(p.dim)
        f, g = p.value_and_grad(x)
        assert g.shape == (p.dim,) and np.isfinite(f)
        np.testing.assert_allclose(g, fd_grad(lambda z: p.value_and_grad(z)[0], x), rtol=1e-6, atol=1e-8)


def test_logreg_loss_is_the_papers_formula():
    """f(x) = mean log(1 + exp(-b a^T x)) + lam sum x^2/(1+x^2)."""
    p = logreg()
    A, b = p.A, p.b
    x = np.random.default_rng(3).standard_normal(p.dim)
    expected = np.mean(np.log1p(np.exp(-b * (A @ x)))) + 0.1 * np.sum(x**2 / (1 + x**2))
    assert p.value_and_grad(x)[0] == pytest.approx(expected, rel=1e-13)
    assert p.value_and_grad(np.zeros(p.dim))[0] == pytest.approx(math.log(2), rel=1e-15)


def test_softmax_loss_is_cross_entropy_with_row_major_weights():
    p = softmax()
    rng = np.random.default_rng(4)
    x = rng.standard_normal(p.dim)
    W = x.reshape(p.features, p.C)
    Z = p.A @ W
    ce = np.mean(np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(len(p.y)), p.y])
    assert p.value_and_grad(x)[0] == pytest.approx(ce + 0.1 * np.sum(x**2 / (1 + x**2)), rel=1e-12)


def test_quadratic_value_and_gradient_are_exact():
    p = quadratic()
    x = np.random.default_rng(5).standard_normal(p.dim)
    f, g = p.value_and_grad(x)
    assert f == pytest.approx(0.5 * x @ p.A @ x - p.b @ x, rel=1e-14)
    np.testing.assert_allclose(g, p.A @ x - p.b, rtol=1e-14)


def test_quadratic_refuses_non_square_or_non_symmetric_matrices():
    with pytest.raises(ValueError):
        Quadratic(np.ones((2, 3)))
    with pytest.raises(ValueError):
        Quadratic(np.array([[1.0, 2.0], [0.0, 1.0]]))


@pytest.mark.parametrize("name,batch", [("logreg", 1), ("logreg", 7), ("logreg-sparse", 3), ("softmax", 1),
                                        ("softmax-sparse", 5)])
def test_minibatch_gradient_is_unbiased_on_average(name, batch):
    """The mean of many minibatch gradients is the full gradient within
    5 standard errors, coordinate by coordinate (every coordinate varies here)."""
    p = PROBLEMS[name]()
    x = 0.5 * np.random.default_rng(8).standard_normal(p.dim)
    rng = np.random.default_rng(9)
    n = 6000
    G = np.stack([p.stoch_grad(x, rng, batch) for _ in range(n)])
    full = p.value_and_grad(x)[1]
    se = G.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(se > 0)
    assert np.all(np.abs(G.mean(axis=0) - full) <= 5 * se + 1e-12)


def test_minibatch_gradient_noise_shrinks_with_the_batch():
    p = logreg()
    x = np.zeros(p.dim)
    rng = np.random.default_rng(10)
    full = p.value_and_grad(x)[1]
    var = {b: np.mean([np.sum((p.stoch_grad(x, rng, b) - full) ** 2) for _ in range(3000)]) for b in (1, 16)}
    assert var[16] < var[1] / 8  # ~ 1/16 for sampling with replacement


def test_quadratic_noisy_gradient_has_mean_exact_and_variance_noise_squared_over_batch():
    p = quadratic(noise=2.0)
    x = np.random.default_rng(11).standard_normal(p.dim)
    rng = np.random.default_rng(12)
    G = np.stack([p.stoch_grad(x, rng, 4) for _ in range(8000)])
    exact = p.value_and_grad(x)[1]
    se = G.std(axis=0, ddof=1) / math.sqrt(len(G))
    assert np.all(np.abs(G.mean(axis=0) - exact) <= 5 * se)
    assert G.var(axis=0).mean() == pytest.approx(4.0 / 4, rel=0.05)


def test_logreg_local_smoothness_is_the_spec_formula():
    """L_i = lambda_max(A_i^T A_i)/(4 m_i) + 2 lam."""
    for p in (logreg(), logreg(1, sparse=True), logreg(2, lam=0.0)):
        A = p.A.toarray() if sp.issparse(p.A) else p.A
        expected = np.linalg.eigvalsh(A.T @ A)[-1] / (4 * A.shape[0]) + 2 * p.lam
        assert p.local_smoothness() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("make", [lambda: logreg(), lambda: logreg(1, sparse=True), lambda: logreg(2, lam=0.0),
                                  lambda: softmax(), lambda: softmax(1, sparse=True)],
                         ids=["logreg", "logreg-sparse", "logreg-lam0", "softmax", "softmax-sparse"])
def test_local_smoothness_bounds_the_hessian_at_random_points(make):
    """L_i >= |lambda| for every eigenvalue of the (numerical) Hessian, at
    points near 0 (where the regulariser's curvature 2 lam peaks and the
    logistic curvature 1/4 too) and further out."""
    p = make()
    L = p.local_smoothness()
    rng = np.random.default_rng(13)
    seen = 0.0
    grad = lambda z: p.value_and_grad(z)[1]  # noqa: E731
    for scale in (0.0, 0.05, 0.5, 1.0, 3.0):
        for _ in range(3):
            ev = np.linalg.eigvalsh(fd_hessian(grad, scale * rng.standard_normal(p.dim)))
            seen = max(seen, np.abs(ev).max())
    assert seen <= L * (1 + 1e-6)
    assert seen >= 0.2 * L  # the bound is not vacuous


def test_quadratic_smoothness_is_the_largest_absolute_eigenvalue():
    p = quadratic()
    assert p.local_smoothness() == pytest.approx(np.abs(np.linalg.eigvalsh(p.A)).max(), rel=1e-12)


def test_stacked_logreg_gradients_equal_each_workers_own_bit_for_bit():
    """The serial runtime's LogRegBatch must give exactly LogReg.grad_aux, or serial != MPI."""
    from psmpi.config import TrainConfig
    from psmpi.problems.logreg import LogRegBatch
    from psmpi.runtime.common import describe_data, local_problem

    rng = np.random.default_rng(7)
    cases = (("breast-cancer", 5, "shuffle", 1, 1),  # one stacked matrix
             ("synthetic:rows=300,features=40,density=0.2,seed=3", 9, "dirichlet:0.5", 2, 2),  # two, on threads
             ("synthetic:rows=300,features=40,density=0.2,seed=3", 13, "shuffle", 8, 3))  # >= 4 workers a group
    for ds, n, split, parts, groups in cases:
        cfg = TrainConfig(dataset=ds, workers=n, split=split, lam=0.05)
        info = describe_data(cfg)
        probs = [local_problem(cfg, info, i) for i in range(n)]
        assert LogRegBatch.applies(probs)
        batch = LogRegBatch(probs, parts=parts)
        assert len(batch.groups) == groups
        for t in range(3):
            x = rng.standard_normal(probs[0].dim) * 10.0 ** (t - 1)  # large margins too (exp overflow)
            for i, p in enumerate(probs):
                g, z = p.grad_aux(x)
                gb, zb = batch.grad_aux(i, x, t)
                assert np.array_equal(g, gb) and np.array_equal(z, zb), (ds, t, i)
    assert not LogRegBatch.applies(probs[:1])
    assert not LogRegBatch.applies([probs[0], LogReg(probs[1].A.toarray(), probs[1].b)])
