"""Composition ``A+B``: a sparsifier A, then an unbiased B on the values A keeps."""
from __future__ import annotations

import numpy as np

from .base import REGISTRY, Compressor, CompressorError, build, compressor_class
from .payload import Composed, Empty

EXAMPLES = ("topk:10%+natural", "topk:10%+qsgd:4", "topk:3+natural-dithering:2", "randk:50%+natural",
            "bernoulli:0.5+terngrad")  # the test tables and `bench compress` run these


def split_spec(spec: str) -> tuple[str, str]:
    """``(A, B)`` of ``'A+B'``, checked by class: A a sparsifier, B unbiased
    (their parameters are checked when they are built for a dimension)."""
    parts = [p.strip() for p in str(spec).split("+")]
    if len(parts) != 2 or not all(parts):
        raise CompressorError(f"a composition is two compressors 'A+B', e.g. 'topk:1%+natural' (got '{spec}')")
    a, b = (compressor_class(p) for p in parts)
    for c in (a, b):
        if c.per_worker:
            raise CompressorError(f"'{c.name}' cannot be part of a composition (each worker runs its own copy); "
                                  f"use it alone (got '{spec}')")
    if not a.sparsifier:
        sparsifiers = ", ".join(n for n, c in sorted(REGISTRY.items()) if c.sparsifier)
        raise CompressorError(f"the first compressor of '{spec}' must be a sparsifier ({sparsifiers})")
    if not b.unbiased:
        raise CompressorError(f"the second compressor of '{spec}' must be unbiased ('{b.name}' is biased)")
    return parts[0], parts[1]


class Composition(Compressor):
    """C = B o A: the sparsifier A keeps K coordinates, the unbiased B (built
    for dimension K) compresses their values; on the wire A's support and B's
    message of dimension K (kind 'composed', never a dense vector).

    * A contractive (alpha_A, e.g. Top-K), B unbiased (omega_B): C = B(A(x)) /
      (omega_B + 1) is contractive with alpha = alpha_A / (omega_B + 1).
      Proof: with a = A(x), lambda = 1/(omega_B + 1), E_B ||lambda B(a) - x||^2
      = ||lambda a - x||^2 + lambda^2 E||B(a) - a||^2 <= ||x||^2 - 2 lambda <a, x>
      + lambda^2 (1 + omega_B) ||a||^2 = ||x||^2 - lambda (||x||^2 - ||a - x||^2)
      <= (1 - lambda alpha_A) ||x||^2 (the composition of Fatkhullin et al.
      2021, "EF21 with bells & whistles").
    * A and B unbiased (Rand-K, Bernoulli): C = B(A(x)) is unbiased with
      omega = (omega_A + 1)(omega_B + 1) - 1 (Horváth et al. 2019): E||C(x) -
      x||^2 = E||B(a) - a||^2 + E||a - x||^2 <= omega_B (1 + omega_A) ||x||^2 +
      omega_A ||x||^2.

    omega_B is B's at dimension K (A's K, or d where K is random, as for
    Bernoulli: every B here has an omega that does not decrease with the
    dimension, so that is an upper bound).  A keeps its values in float64;
    only B's message is rounded to the wire dtype.
    """

    name = "composition"
    takes_param = True
    MAX_CACHED = 8  # B built for this many values of K at most (Bernoulli's K changes every call)

    def setup(self, param):
        a_spec, b_spec = split_spec(param)
        self.first = build(a_spec, self.d, np.float64)
        k = getattr(self.first, "k", None)
        inner = build(b_spec, k or self.d, self.value_dtype)  # B's constants (and its parameter checked)
        if k is None:  # A keeps a random number of coordinates: B must take any number down to 1
            try:
                build(b_spec, 1, self.value_dtype)
            except CompressorError as e:
                raise CompressorError(f"'{param}': {a_spec} keeps a random number of coordinates, down to 1, "
                                      f"which {b_spec} must take ({e})") from None
        self._b_spec, self._omega_b = b_spec, inner.omega
        self.unbiased = self.first.unbiased
        self.deterministic = False
        self._inner_scale = self.scale / (1.0 if self.unbiased else self._omega_b + 1.0)
        self._inner = {}  # B by dimension K

    @property
    def alpha(self):
        if self.first.unbiased:  # (also scaled by as_contractive)
            return 1.0 / (self.omega + 1.0)
        return self.first.alpha / (self._omega_b + 1.0)

    @property
    def omega(self):
        if not self.first.unbiased:
            raise NotImplementedError("a composition with a biased first compressor is contractive")
        return (self.first.omega + 1.0) * (self._omega_b + 1.0) - 1.0

    @property
    def spec(self):
        return self.param

    def _second(self, k: int) -> Compressor:
        b = self._inner.get(k)
        if b is None:
            if len(self._inner) >= self.MAX_CACHED:
                self._inner.clear()
            b = self._inner[k] = build(self._b_spec, k, self.value_dtype, self._inner_scale)
        return b

    def compress(self, x, rng):
        kept = self.first.compress(x, rng)
        k = kept.indices.shape[0]
        if k == 0:
            return Empty(self.d)
        return Composed(self.d, kept.indices, self._second(k).compress(np.asarray(kept.values), rng))
