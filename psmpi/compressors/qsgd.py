import math

import numpy as np

from .base import BLOCK, Compressor, for_uniform_blocks, parse_param, register
from .payload import MAX_QSGD_LEVELS, Quantized


def _levels_reference(x, rng, s, c, dt):
    """The whole-vector formulation (the definition; used for inputs other
    than 1-d float64/float32 numpy arrays)."""
    r = np.abs(x) * c
    lo = np.floor(r)
    levels = lo + (rng.random(x.shape[0]) < (r - lo))
    np.minimum(levels, s, out=levels)
    return np.signbit(x), levels.astype(dt)


def _levels_blocked(x, rng, s, c, dt, block=BLOCK):
    """The same signs and levels as :func:`_levels_reference`, block by
    block: the same ufuncs on the same dtypes (``r`` in the dtype of x, as
    ``abs(x) * c`` with a Python float c gives) into reused scratch, the
    uniforms from :func:`~psmpi.compressors.base.for_uniform_blocks`, the
    signs and levels (cast as ``astype`` casts) written straight into the
    results.  Nothing of size d but the results.

    Where all of a block's ``floor(r)`` are below s (finite inputs: every
    block but the one holding a coordinate near the norm), the levels are
    ``floor(r)`` converted to the integer dtype plus the round-up bit: the
    same integers as the float sum, clipped to s (a no-op there) and
    converted, with two passes fewer over float64 scratch."""
    d = x.shape[0]
    n = max(1, min(block, d))
    scratch = (np.empty(n, x.dtype), np.empty(n, x.dtype), np.empty(n, bool))
    negative = np.empty(d, bool)
    levels = np.empty(d, dt)

    def block_(i, u):
        m = u.shape[0]
        r, lo, up = (a[:m] for a in scratch) if m < n else scratch
        xb = x[i:i + m]
        np.signbit(xb, out=negative[i:i + m])
        np.abs(xb, out=r)
        np.multiply(r, c, out=r)
        np.floor(r, out=lo)
        np.subtract(r, lo, out=r)
        np.less(u, r, out=up)  # round up
        out = levels[i:i + m]
        if lo.max() < s:  # (False with a NaN) lo + up <= s: no clipping, and lo converts exactly
            np.copyto(out, lo, casting="unsafe")
            np.add(out, up.view(np.uint8), out=out)
        else:
            np.add(lo, up, out=lo)
            np.minimum(lo, s, out=lo)
            np.copyto(out, lo, casting="unsafe")

    for_uniform_blocks(rng, d, n, block_)
    return negative, levels


@register
class QSGD(Compressor):
    """Random dithering / QSGD with s levels (Alistarh et al. 2017):
    C(x)_j = ||x||_2 sign(x_j) xi_j / s, where xi_j rounds s|x_j|/||x||_2 to one
    of its two neighbouring integers at random, unbiasedly.
    Unbiased with omega = min(d/s^2, sqrt(d)/s).

    Wire (kind 'quantized', a levelled message): the norm, the levels that
    occur, the coordinates of each and one sign per nonzero; within 1.1x of its
    information content 32 + log2 C(s, m) + log2 multinomial(d; counts of each
    level 0..s) + K bits, see :mod:`psmpi.wire.codec`.

    The levels are computed block by block on the host (:func:`_levels_blocked`):
    the same payload, and the same use of the random stream, as the
    whole-vector formulation (:func:`_levels_reference`).
    """

    name = "qsgd"
    constant = "unbiased, omega = min(d/S^2, sqrt(d)/S)"
    examples = ("qsgd:4", "qsgd:1", "qsgd:300")
    unbiased = True
    deterministic = False
    takes_param = True

    def setup(self, param):
        self.s = parse_param(self.name, param, int, lambda s: 1 <= s <= MAX_QSGD_LEVELS,
                             f"a number of levels s in [1, {MAX_QSGD_LEVELS}], e.g. 'qsgd:4'")

    @property
    def omega(self):
        return min(self.d / self.s**2, math.sqrt(self.d) / self.s)

    def compress(self, x, rng):
        dt = np.uint8 if self.s < 256 else np.uint16
        norm = float(np.linalg.norm(x))
        sent = self.wire_values(np.array([norm]))[0]  # the norm on the wire, times scale (1/(omega+1) if contractive)
        if norm == 0:
            return Quantized(self.d, sent, self.s, np.zeros(self.d, bool), np.zeros(self.d, dt))
        c = self.s / norm
        if type(x) is np.ndarray and x.ndim == 1 and x.dtype in (np.float64, np.float32):
            negative, levels = _levels_blocked(x, rng, self.s, c, dt)
        else:
            negative, levels = _levels_reference(x, rng, self.s, c, dt)
        return Quantized(self.d, sent, self.s, negative, levels)
