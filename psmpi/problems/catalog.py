"""Quadratic problems by name, usable from the command line as
``--dataset quad:NAME[,key=value...]`` (the problem is then ``quadratic``).

``quad:beznosikov``
    The 3-worker example of Beznosikov, Horvath, Richtarik, Safaryan (2020,
    "On biased compression for distributed learning", Example 1):
    f_i(x) = <a_i, x>^2 + 1/2 ||x||^2 on R^3 with a_1 = (-3, 2, 2),
    a_2 = (2, -3, 2), a_3 = (2, 2, -3); DCGD with Top-1 diverges from
    x^0 = (t, t, t) while EF21 converges.  Needs exactly 3 workers.
``quad:identity,d=10,noise=1``
    f_i(x) = 1/2 ||x||^2 on R^d for every worker, with stochastic gradients
    x + noise * xi/sqrt(B), xi ~ N(0, I) (the EF21-SGDM paper's Theorem 1).
"""
from __future__ import annotations

import numpy as np

from ..config import ConfigError
from .quadratic import Quadratic

NAMES = ("beznosikov", "identity")


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
        return [Quadratic(2.0 * np.outer(ai, ai) + np.eye(3), noise=opts.get("noise", 0.0)) for ai in a]
    if name == "identity":
        d = int(opts.get("d", 10))
        if d < 1:
            raise ConfigError(f"quad:identity needs d >= 1 (got {d})")
        return [Quadratic(np.eye(d), noise=opts.get("noise", 1.0)) for _ in range(n)]
    raise ConfigError(f"unknown quadratic '{name}'; valid: quad:{', quad:'.join(NAMES)}")
