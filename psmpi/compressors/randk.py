import numpy as np

from ..backend import device_of, is_device_array
from .base import Compressor, parse_count, register
from .payload import Sparse

# sorted_distinct(): how to sort K distinct indices in [0, d) (measured, 2-core EPYC, numpy 2.4)
SORT_MAX_FRACTION = 100  # K * 100 < d: numpy.sort (K log K beats a pass over d)
PAD_MIN_FRACTION = 25    # d / 25 <= K <= d / 10, d >= PAD_MIN_D: the mask padded into numpy's dense nonzero
PAD_MIN_D = 1 << 19


def sorted_distinct(idx: np.ndarray, d: int) -> np.ndarray:
    """``numpy.sort(idx)`` for distinct indices in [0, d), the same array (values and dtype).

    For a small K the sort itself.  Else the indices are scattered into a
    boolean mask of length d, read back in order by ``numpy.flatnonzero``.
    numpy's ``nonzero`` of a boolean array takes a sparse path (a memchr for
    the next set entry, some 15 ns per hit out of cache) up to 10 % set
    entries and a branchless dense one (well under 1 ns per entry) above; for
    a K of 4-10 % of a long vector the mask gets a tail of set entries that
    lifts it just above 10 %, and the tail's positions are cut off the
    result again (copying the first K, so the payload holds no more memory
    than the sort's).
    """
    k = idx.shape[0]
    if k * SORT_MAX_FRACTION < d or idx.dtype != np.intp:
        return np.sort(idx)
    pad = 0
    if d >= PAD_MIN_D and k * PAD_MIN_FRACTION >= d and k * 10 <= d:
        pad = -(-(d - 10 * k) // 9) + 64  # (k + pad) / (d + pad) > 1/10
    mask = np.zeros(d + pad, bool)
    mask[idx] = True
    if not pad:
        return np.flatnonzero(mask)
    mask[d:] = True
    return np.flatnonzero(mask)[:k].copy()  # (a copy: the payload keeps no padding)


@register
class RandK(Compressor):
    """Random sparsification: K coordinates uniformly without replacement,
    scaled by d/K. Unbiased with omega = d/K - 1.

    The K indices are drawn by ``rng.choice(d, K, replace=False)`` and
    sorted; on the host the sort is :func:`sorted_distinct` (the same array,
    faster for a large K)."""

    name = "randk"
    constant = "unbiased, omega = d/K - 1"
    examples = ("randk:1", "randk:10%", "randk:50%", "randk:100%")
    sparsifier = True
    unbiased = True
    deterministic = False
    takes_param = True
    device_native = True

    def setup(self, param):
        self.k = parse_count(self.name, param, self.d)

    @property
    def omega(self):
        return self.d / self.k - 1.0

    def compress(self, x, rng):
        if type(x) is np.ndarray:  # a host array (a device array, emulated ones included, as before)
            idx = sorted_distinct(rng.choice(self.d, self.k, replace=False), self.d)
            return Sparse(self.d, idx, self.wire_values(x[idx] * (self.d / self.k)))
        idx = np.sort(rng.choice(self.d, self.k, replace=False))  # drawn on the host: the same stream everywhere
        vals = x[device_of(x).asarray(idx) if is_device_array(x) else idx]
        return Sparse(self.d, idx, self.wire_values(vals * (self.d / self.k)))
