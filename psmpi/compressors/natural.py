import numpy as np

from .base import BLOCK, Compressor, for_uniform_blocks, register
from .payload import Natural


def _natural_reference(x, rng, value_dtype):
    """The whole-vector formulation (the definition; used for inputs other
    than 1-d float64/float32 numpy arrays)."""
    info = np.finfo(value_dtype)
    mag = np.abs(x)
    _, e = np.frexp(mag)  # mag = mant * 2^e, mant in [0.5, 1)
    e = e - 1  # mag in [2^e, 2^(e+1))
    low = np.ldexp(1.0, e)
    p_up = np.where(mag > 0, (mag - low) / np.where(mag > 0, low, 1.0), 0.0)
    e = e + (rng.random(x.shape[0]) < p_up)
    exps = e.astype(np.int16)
    exps[(mag == 0) | (e < info.minexp)] = Natural.ZERO
    overflow = bool(np.any(e[mag > 0] > info.maxexp - 1))
    return np.signbit(x), exps, overflow


def _natural_blocked(x, rng, value_dtype, block=BLOCK):
    """The same numbers as :func:`_natural_reference`, block by block.

    Per block: frexp of |x| into reused scratch, ``p_up = 2 mant - 1`` (for
    every finite |x| > 0 this is exactly ``(|x| - 2^e) / 2^e`` of the
    reference, both computed without rounding; for |x| = 0 it is -1 instead
    of 0 and for NaN it is NaN instead of 0, and ``u < p_up`` is False either
    way since u >= 0; for inf both are inf), the uniforms from
    :func:`for_uniform_blocks`, and the signs and exponents written straight
    into the results.  Nothing of size d but the results.
    """
    info = np.finfo(value_dtype)
    minexp, maxexp1 = info.minexp, info.maxexp - 1
    d = x.shape[0]
    n = max(1, min(block, d))
    scratch = (np.empty(n, x.dtype), np.empty(n, x.dtype), np.empty(n, np.int32), np.empty(n, bool),
               np.empty(n, bool))
    negative = np.empty(d, bool)
    exps = np.empty(d, np.int16)
    overflow = []

    def block_(s, u):
        m = u.shape[0]
        mag, mant, e, up, zero = (a[:m] for a in scratch) if m < n else scratch
        xb = x[s:s + m]
        np.signbit(xb, out=negative[s:s + m])
        np.abs(xb, out=mag)
        np.frexp(mag, out=(mant, e))
        np.multiply(mant, 2, out=mant)
        np.subtract(mant, 1, out=mant)  # p_up
        np.less(u, mant, out=up)
        np.subtract(e, 1, out=e)
        np.add(e, up, out=e)  # the exponent after rounding
        if not overflow and e.max() > maxexp1 and np.any(e[mag > 0] > maxexp1):
            overflow.append(s)  # (raised once all uniforms are drawn, as the reference does)
        np.equal(mag, 0, out=zero)
        np.less(e, minexp, out=up)
        np.logical_or(zero, up, out=zero)
        out = exps[s:s + m]
        np.copyto(out, e, casting="unsafe")
        np.copyto(out, Natural.ZERO, where=zero)

    for_uniform_blocks(rng, d, n, block_)
    return negative, exps, bool(overflow)


@register
class NaturalCompression(Compressor):
    """Natural compression (Horvath et al. 2019, "Natural compression for
    distributed deep learning"): each x_j with 2^e <= |x_j| < 2^(e+1) becomes
    sign(x_j) 2^e with probability (2^(e+1) - |x_j|)/2^e, else sign(x_j) 2^(e+1).
    Unbiased with omega = 1/8.  Magnitudes below the smallest normal number of
    the wire dtype become 0.

    Wire (kind 'natural', a levelled message): the scale, the exponents that
    occur, the coordinates of each and one sign per nonzero; within 1.1x of its
    information content 32 + log2 C(254, m) + log2 multinomial(d; counts of
    zero and of each of the m exponents) + K bits (float32), see
    :mod:`psmpi.wire.codec`.

    Computed block by block on the host (:func:`_natural_blocked`): the same
    payload, and the same use of the random stream, as the whole-vector
    formulation (:func:`_natural_reference`).
    """

    name = "natural"
    constant = "unbiased, omega = 1/8"
    unbiased = True
    deterministic = False

    @property
    def omega(self):
        return 0.125

    def compress(self, x, rng):
        if type(x) is np.ndarray and x.ndim == 1 and x.dtype in (np.float64, np.float32):
            negative, exps, overflow = _natural_blocked(x, rng, self.value_dtype)
        else:
            negative, exps, overflow = _natural_reference(x, rng, self.value_dtype)
        if overflow:
            raise FloatingPointError("natural compression: value overflows the wire dtype")
        scale = self.value_dtype.type(self.scale)
        return Natural(self.d, scale, negative, exps)
