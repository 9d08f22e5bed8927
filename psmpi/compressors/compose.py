"""Composition ``A+B``: a sparsifier A, then an unbiased B on the values A keeps."""
from __future__ import annotations

import numpy as np

from .base import REGISTRY, Compressor, CompressorError, make_compressor
from .payload import Composed, Empty

EXAMPLES = ("topk:10%+natural", "topk:10%+qsgd:4", "topk:3+natural-dithering:2", "randk:50%+natural",
            "bernoulli:0.5+terngrad")  # the test tables and `bench compress` run these


def split_spec(spec: str) -> tuple[str, str]:
    """``(A, B)`` of ``'A+B'``, checked by class: A a sparsifier, B unbiased
    (their parameters are checked when they are built for a dimension)."""
    parts = [p.strip() for p in str(spec).split("+")]
    if len(parts) != 2 or not all(parts):
        raise CompressorError(f"a composition is two compressors 'A+B', e.g. 'topk:1%+natural' (got '{spec}')")
    a, b = (REGISTRY.get(p.partition(":")[0].lower()) for p in parts)
    for part, cls in zip(parts, (a, b)):
        if cls is None:
            name = part.partition(":")[0].lower()
            raise CompressorError(f"unknown compressor '{name}'; valid: {', '.join(sorted(REGISTRY))}")
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
    device_native = False

    def __init__(self, d: int, param: str | None = None, value_dtype=np.float32, scale: float = 1.0):
        super().__init__(d, param, value_dtype, scale)

    def setup(self, param):
        a_spec, b_spec = split_spec(param)
        self.first = make_compressor(a_spec, self.d, np.float64)
        k = getattr(self.first, "k", self.d)
        inner = make_compressor(b_spec, k, self.value_dtype)  # B's constants (and its parameter checked)
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

    def as_contractive(self):
        if not self.unbiased:
            return self
        out = Composition(self.d, self.param, self.value_dtype, scale=1.0 / (self.omega + 1.0))
        out.unbiased = False
        return out

    def _second(self, k: int) -> Compressor:
        b = self._inner.get(k)
        if b is None:
            b = make_compressor(self._b_spec, k, self.value_dtype)
            b = self._inner[k] = type(b)(k, b.param, self.value_dtype, scale=self._inner_scale)
        return b

    def compress(self, x, rng):
        kept = self.first.compress(x, rng)
        k = kept.indices.shape[0]
        if k == 0:
            return Empty(self.d)
        return Composed(self.d, kept.indices, self._second(k).compress(np.asarray(kept.values), rng))
