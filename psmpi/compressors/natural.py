import numpy as np

from .base import Compressor, register
from .payload import Natural


@register
class NaturalCompression(Compressor):
    """Natural compression (Horvath et al. 2019, "Natural compression for
    distributed deep learning"): each x_j with 2^e <= |x_j| < 2^(e+1) becomes
    sign(x_j) 2^e with probability (2^(e+1) - |x_j|)/2^e, else sign(x_j) 2^(e+1).
    Unbiased with omega = 1/8; one sign bit and an exponent per coordinate.
    Magnitudes below the smallest normal number of the wire dtype become 0.
    """

    name = "natural"
    unbiased = True
    deterministic = False

    @property
    def omega(self):
        return 0.125

    def compress(self, x, rng):
        info = np.finfo(self.value_dtype)
        mag = np.abs(x)
        mant, e = np.frexp(mag)  # mag = mant * 2^e, mant in [0.5, 1)
        e = e - 1  # mag in [2^e, 2^(e+1))
        low = np.ldexp(1.0, e)
        p_up = np.where(mag > 0, (mag - low) / np.where(mag > 0, low, 1.0), 0.0)
        e = e + (rng.random(x.shape[0]) < p_up)
        exps = e.astype(np.int16)
        exps[(mag == 0) | (e < info.minexp)] = Natural.ZERO
        if np.any(e[mag > 0] > info.maxexp - 1):
            raise FloatingPointError("natural compression: value overflows the wire dtype")
        scale = self.value_dtype.type(self.scale)
        return Natural(self.d, scale, np.signbit(x), exps)
