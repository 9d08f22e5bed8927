import numpy as np

from .base import Compressor, parse_param, register
from .payload import Sparse


@register
class Bernoulli(Compressor):
    """Bernoulli sparsification: each coordinate kept independently with
    probability p and scaled by 1/p.  Unbiased with omega = 1/p - 1 (per
    coordinate the variance is (1/p - 1) x_j^2).

    Wire: a sparse message (the support in its smallest encoding, then the K
    values); information content log2 C(d, K) + 32 K bits (float32 values)."""

    name = "bernoulli"
    constant = "unbiased, omega = 1/P - 1"
    unbiased = True
    deterministic = False
    takes_param = True
    sparsifier = True
    examples = ("bernoulli:0.1", "bernoulli:0.5", "bernoulli:1")

    def setup(self, param):
        self.p = parse_param(self.name, param, float, lambda p: 0.0 < p <= 1.0,
                             "a probability p in (0, 1], e.g. 'bernoulli:0.1'")

    @property
    def omega(self):
        return 1.0 / self.p - 1.0

    def compress(self, x, rng):
        idx = np.flatnonzero(rng.random(self.d) < self.p)
        return Sparse(self.d, idx, self.wire_values(x[idx] / self.p))
