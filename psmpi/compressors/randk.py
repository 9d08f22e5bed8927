import numpy as np

from ..backend import device_of, is_device_array
from .base import Compressor, parse_count, register
from .payload import Sparse


@register
class RandK(Compressor):
    """Random sparsification: K coordinates uniformly without replacement,
    scaled by d/K. Unbiased with omega = d/K - 1."""

    name = "randk"
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
        idx = np.sort(rng.choice(self.d, self.k, replace=False))  # drawn on the host: the same stream everywhere
        vals = x[device_of(x).asarray(idx) if is_device_array(x) else idx]
        return Sparse(self.d, idx, self.wire_values(vals * (self.d / self.k)))
