import math

import numpy as np

from .base import Compressor, register
from .payload import Dithered


@register
class TernGrad(Compressor):
    """TernGrad (Wen et al. 2017): C(x) = s sign(x) b with s = max_j |x_j| and
    b_j ~ Bernoulli(|x_j| / s), independently (no layer-wise scaling or
    gradient clipping).

    Unbiased; E||C(x) - x||^2 = s ||x||_1 - ||x||_2^2, and
    ||x||_inf ||x||_1 <= (1 + sqrt(d))/2 ||x||_2^2 (attained by one entry 1 and
    d - 1 entries 1/(1 + sqrt(d))), so omega = (sqrt(d) - 1)/2, the tight
    worst case (the paper's bound ||x||_inf ||x||_1 <= sqrt(d) ||x||^2 gives
    sqrt(d) - 1).

    Wire: the payload is natural dithering with one level (kind 'dithered', a
    levelled message: the support of b, one sign per nonzero); information
    content 32 + log2 C(d, K) + K bits for K nonzeros.
    """

    name = "terngrad"
    constant = "unbiased, omega = (sqrt(d) - 1)/2"
    unbiased = True
    deterministic = False

    @property
    def omega(self):
        return (math.sqrt(self.d) - 1.0) / 2.0

    def compress(self, x, rng):
        mag = np.abs(x)
        top = float(mag.max()) if mag.shape[0] else 0.0
        sent = self.wire_values(np.array([top]))[0]
        if top == 0:
            return Dithered(self.d, sent, 1, np.zeros(self.d, bool), np.zeros(self.d, np.uint8))
        keep = rng.random(self.d) < mag / top
        return Dithered(self.d, sent, 1, np.signbit(x) & keep, keep.view(np.uint8))  # signs of the nonzeros only
