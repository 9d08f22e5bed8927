import numpy as np

from .base import Compressor, parse_count, register
from .payload import Sparse


def top_k_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k entries of largest magnitude (ties: any)."""
    d = x.shape[0]
    if k >= d:
        return np.arange(d)
    mag = np.abs(x)
    idx = np.argpartition(mag, d - k)[d - k:]
    idx.sort()
    return idx


@register
class TopK(Compressor):
    """Greedy sparsification: keep the K largest |x_j|. Contractive, alpha = K/d."""

    name = "topk"
    takes_param = True

    def setup(self, param):
        self.k = parse_count(self.name, param, self.d)

    @property
    def alpha(self):
        return self.k / self.d

    def compress(self, x, rng):
        idx = top_k_indices(x, self.k)
        return Sparse(self.d, idx, self.wire_values(x[idx]))
