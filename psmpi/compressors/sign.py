import numpy as np

from .base import Compressor, register
from .payload import Signs


@register
class ScaledSign(Compressor):
    """Scaled sign (Karimireddy et al. 2019): C(x) = ||x||_1/d * sign(x).

    Contractive with alpha = ||x||_1^2 / (d ||x||_2^2) >= 1/d; the declared
    (worst-case) alpha is 1/d. One bit per coordinate plus one value.
    """

    name = "sign"
    constant = "contractive, alpha >= 1/d"
    device_native = True

    @property
    def alpha(self):
        return 1.0 / self.d

    def compress(self, x, rng):
        scale = self.wire_values(np.abs(x).sum(keepdims=True) / self.d)[0]  # stays on x's device
        return Signs(self.d, scale, np.signbit(x))
