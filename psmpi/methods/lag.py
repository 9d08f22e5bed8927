from .base import ThreePC, register, tracking_init, tracking_step
from .clag import ZETA, lazy_init, lazy_update


@register
class LAG(ThreePC):
    """LAG, lazy aggregation (Chen, Giannakis, Sun, Yin 2018) in the 3PC form
    (Richtarik et al. 2022): CLAG with the identity compressor,

    init:    g_i^0 = grad f_i(x^0), sent dense
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i (g_i^{t+1} - g_i^t)
    worker:  g_i^{t+1} = grad f_i(x^{t+1})
                 if ||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2,
             g_i^{t+1} = g_i^t otherwise (an empty message); send g_i^{t+1} - g_i^t

    theory:  gamma = 1/(L + L_tilde sqrt(zeta)): the 3PC theorem with LAG's constants
             A = 1, B = zeta (3PC paper).
    """

    name = "lag"
    title = "lazy aggregation in 3PC form (Chen et al. 2018; Richtarik et al. 2022)"
    paper = "Chen, Giannakis, Sun, Yin (2018), LAG: Lazily aggregated gradient; 3PC (2022)"
    compressors = "identity"
    params = (ZETA,)

    theory = "1/(L + L~ sqrt(zeta)), 3PC with A = 1, B = zeta"

    def constants(self, comp, hp):
        return 1.0, hp.zeta

    worker_init = staticmethod(lazy_init)
    worker_step = staticmethod(lazy_update)
    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
