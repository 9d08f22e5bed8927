"""Quadratic problems by name, usable from the command line as
``--dataset quad:NAME[,key=value...]`` (the problem is then ``quadratic``).

``quad:beznosikov``
    The 3-worker example of Beznosikov, Horvath, Richtarik, Safaryan (2020,
    "On biased compression for distributed learning", Example 1):
    f_i(x) = <a_i, x>^2 + 1/4 ||x||^2 on R^3 with a_1 = (-3, 2, 2),
    a_2 = (2, -3, 2), a_3 = (2, 2, -3).  At x = (t, t, t),
    grad f_i(x) = (t/2)(9, 9, 9) - 10 t e_i, so Top-1 keeps exactly the
    coordinate -11t/2 (no tie) and DCGD with Top-1 gives
    x^{k} = (1 + 11 gamma/6)^k x^0: it diverges for every gamma > 0, while
    EF21 converges.  (With 1/2 ||x||^2 all three coordinates of the gradient
    would tie at magnitude 5t and the example would hinge on tie-breaking.)
    Needs exactly 3 workers.
``quad:identity,d=10,noise=1``
    f_i(x) = 1/2 ||x||^2 on R^d for every worker, with stochastic gradients
    x + noise * xi/sqrt(B), xi ~ N(0, I) (the EF21-SGDM paper's Theorem 1).
``quad:skewed,d=2,noise=1``
    The same f_i(x) = 1/2 ||x||^2 on R^d (d >= 2), but the gradient noise on
    the first two coordinates is a zero-mean, three-point distribution
    (``SKEWED_POINTS`` with probabilities ``SKEWED_PROBS``, scaled to
    E||xi||^2 = noise^2; a minibatch of B averages B draws) whose Top-1
    compression is *biased*.  This is the mechanism behind the EF21-SGDM
    paper's Theorem 1: compressing noisy gradients adds a bias that neither a
    smaller step nor more workers remove, so EF21-SGD and EF21-SGD-ideal stall
    at ||grad f||^2 of order noise^2, while EF21-SGDM's momentum averages the
    noise before it is compressed.  (Gaussian noise, as in quad:identity, is
    symmetric, Top-1 of it is unbiased, and the effect does not show.)
"""
from __future__ import annotations

import numpy as np

from ..config import ConfigError
from .quadratic import Quadratic

NAMES = ("beznosikov", "identity", "skewed")

# quad:skewed: zero-mean noise on R^2 whose Top-1 compression has a non-zero mean
# (found by a small search over three-point distributions; see the docstring).
SKEWED_PROBS = np.array([0.84, 0.12, 0.04])
_P = np.array([[0.0, 0.0], [2.0, 1.7], [-1.1, 0.2]])
_P[0] = -(SKEWED_PROBS[1:] @ _P[1:]) / SKEWED_PROBS[0]  # zero mean
SKEWED_POINTS = _P / np.sqrt(SKEWED_PROBS @ (_P ** 2).sum(axis=1))  # E||xi||^2 = 1
del _P


class SkewedNoiseQuadratic(Quadratic):
    """f(x) = 1/2 x^T A x with three-point noise on the first two coordinates."""

    def minibatch(self, rng, batch):
        """The noise on the first two coordinates, the mean of ``batch`` draws (None without noise)."""
        if not self.noise:
            return None
        k = rng.choice(len(SKEWED_PROBS), size=batch, p=SKEWED_PROBS)
        return self.noise * SKEWED_POINTS[k].mean(axis=0)

    def batch_grad(self, x, xi):
        g = self.A @ x - self.b
        if xi is not None:
            g[:2] += xi  # (g is a new array)
        return g


def _options(spec: str) -> tuple[str, dict]:
    body = spec.split(":", 1)[1]
    name, *items = body.split(",")
    opts = {}
    for item in items:
        k, _, v = item.partition("=")
        try:
            opts[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"bad value in '{spec}': {item!r} (use key=number)") from None
    return name.strip(), opts


def quadratic_problems(spec: str, n: int) -> list[Quadratic]:
    name, opts = _options(spec)
    if name == "beznosikov":
        if n != 3:
            raise ConfigError(f"quad:beznosikov is the 3-worker example; use 3 workers (got {n})")
        a = np.array([[-3.0, 2.0, 2.0], [2.0, -3.0, 2.0], [2.0, 2.0, -3.0]])
        # f_i(x) = 1/2 x^T A_i x with A_i = 2 a_i a_i^T + 1/2 I, i.e. <a_i, x>^2 + 1/4 ||x||^2
        return [Quadratic(2.0 * np.outer(ai, ai) + 0.5 * np.eye(3), noise=opts.get("noise", 0.0)) for ai in a]
    if name == "identity":
        d = int(opts.get("d", 10))
        if d < 1:
            raise ConfigError(f"quad:identity needs d >= 1 (got {d})")
        return [Quadratic(np.eye(d), noise=opts.get("noise", 1.0)) for _ in range(n)]
    if name == "skewed":
        d = int(opts.get("d", 2))
        if d < 2:
            raise ConfigError(f"quad:skewed needs d >= 2 (got {d})")
        return [SkewedNoiseQuadratic(np.eye(d), noise=opts.get("noise", 1.0)) for _ in range(n)]
    raise ConfigError(f"unknown quadratic '{name}'; valid: quad:{', quad:'.join(NAMES)}")
