from .base import Method, RESEND, batch_params, register
from .gd import averaged_init, averaged_step, send_gradient, send_gradient_init


@register
class DCGD(Method):
    """Distributed compressed gradient descent (DCGD / compressed SGD), the naive
    method (Khirirat, Feyzmahdavian, Johansson 2018; Alistarh et al. 2017):

    worker:  send m_i^t = C(grad f_i(x^t))
    master:  x^{t+1} = x^t - gamma (1/n) sum_i m_i^t

    Any compressor is accepted; with a biased one (Top-K) it can diverge
    (Beznosikov et al. 2020, Example 1), which is what error feedback fixes.
    theory:  unbiased C with omega: gamma = 1/(L (1 + omega/n)), a step of the
             order the analyses of unbiased compression allow (Khirirat et al.
             2018; with heterogeneous f_i DCGD reaches only a neighbourhood).  A biased C has no convergence theory (it
             can diverge for every step): 'theory' then uses 1/L, the step of
             uncompressed GD, as a reference point, not a guarantee.
    """

    name = "dcgd"
    resync = RESEND
    title = "compressed GD/SGD, the naive method (Khirirat et al. 2018)"
    paper = "Khirirat, Feyzmahdavian, Johansson (2018), Distributed learning with compressed gradients"
    compressors = "any"
    params = batch_params("full")
    theory = "unbiased C: 1/(L(1 + omega/n)); biased C: theory gives none, 1/L (GD's step) is used"
    independent_compressors = True  # omega/n: the n compressors drawn independently

    def theory_gamma(self, c, comp, hp):
        if not comp.unbiased:
            return 1.0 / c.L
        return 1.0 / (c.L * (1.0 + comp.omega / hp.n))

    worker_init = staticmethod(send_gradient_init)
    worker_step = staticmethod(send_gradient)
    master_init = staticmethod(averaged_init)
    master_step = staticmethod(averaged_step)
