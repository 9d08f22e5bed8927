from .base import Compressor, register
from .payload import Dense


@register
class Identity(Compressor):
    """No compression: C(x) = x (alpha = 1, omega = 0). Sent as a dense vector."""

    name = "identity"
    constant = "alpha = 1, omega = 0"
    examples = ("identity",)
    unbiased = True
    device_native = True

    @property
    def omega(self):
        return 0.0

    def compress(self, x, rng):
        return Dense(self.wire_values(x))
