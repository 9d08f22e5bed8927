from .base import register
from .gd import GD


@register
class DCGD(GD):
    """Distributed compressed gradient descent (DCGD / compressed SGD), the naive
    method (Khirirat et al. 2018; Alistarh et al. 2017):

    x^{t+1} = x^t - gamma (1/n) sum_i C(grad f_i(x^t)).

    Any compressor is accepted; with a biased one (Top-K) it can diverge
    (Beznosikov et al. 2020), which is what EF fixes.  Step 'theory':
    1/(L (1 + omega/n)) for unbiased compressors, 1/L otherwise.
    """

    name = "dcgd"
    paper = "Khirirat, Feyzmahdavian, Johansson (2018), Distributed learning with compressed gradients"
    compressors = "any"

    def theory_gamma(self, L, Lt, comp, hp):
        return 1.0 / (L * (1.0 + comp.omega / hp.n)) if comp.unbiased else 1.0 / L
