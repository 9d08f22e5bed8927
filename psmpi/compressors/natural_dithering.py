import math

import numpy as np

from .base import Compressor, parse_param, register
from .payload import MAX_DITHER_LEVELS as MAX_LEVELS
from .payload import Dithered


def dither_levels(t: np.ndarray, s: int, rng) -> np.ndarray:
    """Levels u in [0, s] (uint8) of t in [0, 1], rounded at random and
    unbiasedly to the grid 0, 2^(1-s), ..., 1/2, 1 (level u is 2^(u-s), u > 0):
    for 2^e <= t < 2^(e+1) (e >= 1-s) to 2^e or 2^(e+1), below 2^(1-s) to 0 or
    2^(1-s).  One uniform per coordinate."""
    mant, e = np.frexp(t)  # t = mant 2^e, mant in [0.5, 1); floor(log2 t) = e - 1
    e += s - 1  # the level just below t, before clipping
    below = e < 1  # t < 2^(1-s): between 0 and the smallest level
    p_up = mant
    p_up *= 2.0
    p_up -= 1.0  # the fraction of the way to the next level inside [2^(e-1), 2^e) (-1 at t = 0)
    np.multiply(t, 2.0 ** (s - 1), out=p_up, where=below)  # t / 2^(1-s) below the grid (exact: a power of 2)
    np.clip(e, 0, s, out=e)
    e[t == 0] = 0
    p_up[e == s] = 0.0  # t = 1 (or a rounding above it): the top level
    up = rng.random(t.shape[0]) < p_up
    levels = e.astype(np.uint8)
    levels += up.view(np.uint8)
    return levels


@register
class NaturalDithering(Compressor):
    """Natural dithering with s levels (Horváth et al. 2019, "Natural
    compression for distributed deep learning", Sec. 4, l2 norm): random
    dithering of t_j = |x_j| / ||x||_2 to the grid 0, 2^(1-s), ..., 1/2, 1
    (neighbouring grid points, unbiasedly), times ||x||_2 sign(x_j).

    Unbiased with omega = 1/8 + min(sqrt(d) / 2^(s-1), d / 2^(2(s-1))) for the
    l2 norm.  Derivation: for t in [2^e, 2^(e+1)] the
    variance (2^(e+1) - t)(t - 2^e) is at most t^2/8 (equality at t = 4/3 2^e);
    below b = 2^(1-s) it is t(b - t) <= min(t b, b^2/4); summing, with
    sum t_j^2 = 1 and sum t_j <= sqrt(d), gives the bound.

    Wire (kind 'dithered', a levelled message): the norm, the levels that
    occur, the coordinates of each, and one sign per nonzero; its information
    content is 32 + log2 C(s, m) + log2 multinomial(d; level counts) + K bits
    (which m levels occur, the levels' entropy given their histogram, K
    signs), see :mod:`psmpi.wire.codec`.
    """

    name = "natural-dithering"
    constant = "unbiased, omega = 1/8 + min(sqrt(d)/2^(S-1), d/2^(2(S-1)))"
    unbiased = True
    deterministic = False
    takes_param = True
    examples = ("natural-dithering:4", "natural-dithering:1", "natural-dithering:8")

    def setup(self, param):
        self.s = parse_param(self.name, param, int, lambda s: 1 <= s <= MAX_LEVELS,
                             f"a number of levels s in [1, {MAX_LEVELS}], e.g. 'natural-dithering:4'")

    @property
    def omega(self):
        b = 2.0 ** (1 - self.s)
        return 0.125 + min(math.sqrt(self.d) * b, self.d * b * b)

    def compress(self, x, rng):
        norm = float(np.linalg.norm(x))
        sent = self.wire_values(np.array([norm]))[0]  # times scale (1/(omega+1) if contractive)
        if norm == 0:
            return Dithered(self.d, sent, self.s, np.zeros(self.d, bool), np.zeros(self.d, np.uint8))
        levels = dither_levels(np.abs(x) / norm, self.s, rng)
        return Dithered(self.d, sent, self.s, np.signbit(x) & (levels > 0), levels)  # signs of the nonzeros only
