import math

import numpy as np

from .base import Compressor, CompressorError, register
from .payload import Quantized


@register
class QSGD(Compressor):
    """Random dithering / QSGD with s levels (Alistarh et al. 2017):
    C(x)_j = ||x||_2 sign(x_j) xi_j / s, where xi_j rounds s|x_j|/||x||_2 to one
    of its two neighbouring integers at random, unbiasedly.
    Unbiased with omega = min(d/s^2, sqrt(d)/s).
    """

    name = "qsgd"
    unbiased = True
    deterministic = False
    takes_param = True

    def setup(self, param):
        try:
            self.s = int(param)
            if not 1 <= self.s <= 65535:
                raise ValueError
        except (TypeError, ValueError):
            raise CompressorError(f"qsgd needs a number of levels s in [1, 65535], e.g. 'qsgd:4' (got {param!r})") from None

    @property
    def omega(self):
        return min(self.d / self.s**2, math.sqrt(self.d) / self.s)

    def compress(self, x, rng):
        dt = np.uint8 if self.s < 256 else np.uint16
        norm = float(np.linalg.norm(x))
        sent = self.wire_values(np.array([norm]))[0]  # the norm on the wire, times scale (1/(omega+1) if contractive)
        if norm == 0:
            return Quantized(self.d, sent, self.s, np.zeros(self.d, bool), np.zeros(self.d, dt))
        r = np.abs(x) * (self.s / norm)
        lo = np.floor(r)
        levels = lo + (rng.random(self.d) < (r - lo))
        np.minimum(levels, self.s, out=levels)
        return Quantized(self.d, sent, self.s, np.signbit(x), levels.astype(dt))
