from .base import Method, register, three_pc_gamma, tracking_init, tracking_step
from .clag import ZETA, lazy_init, lazy_update


@register
class LAG(Method):
    """LAG, lazy aggregation (Chen, Giannakis, Sun, Yin 2018) in the 3PC form
    (Richtarik et al. 2022): CLAG with the identity compressor,

    init:    g_i^0 = grad f_i(x^0), sent dense
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i (g_i^{t+1} - g_i^t)
    worker:  g_i^{t+1} = grad f_i(x^{t+1})
                 if ||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2,
             g_i^{t+1} = g_i^t otherwise (an empty message); send g_i^{t+1} - g_i^t

    theory:  SEE_THEORY
    """

    name = "lag"
    paper = "Chen, Giannakis, Sun, Yin (2018), LAG: Lazily aggregated gradient; 3PC (2022)"
    compressors = "identity"
    params = (ZETA,)

    worker_init = staticmethod(lazy_init)
    worker_step = staticmethod(lazy_update)
    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
