from .base import ThreePC, ef21_theta_beta, register
from .marina import P, SYNC_RESYNC, sync_init, sync_master_init, sync_master_step, sync_resync, sync_step


def v5_constants(alpha: float, p: float) -> tuple[float, float]:
    """(A, B) = (1 - sqrt(1 - p), (1 - p)(1 - alpha)/(1 - sqrt(1 - p))) (3PC paper, 3PCv5)."""
    a, b = ef21_theta_beta(p)
    return a, b * (1.0 - alpha)


@register
class ThreePCv5(ThreePC):
    """3PCv5 (Richtarik et al., "3PC: Three point compressors", ICML 2022): the 3PC
    method with C_{h,y}(x) = x with probability p, else h + C(x - y); MARINA's
    mechanism with a contractive C:

    init:    g_i^0 = grad f_i(x^0), sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  one coin c_t ~ Bernoulli(p) shared by all workers
             g^{t+1} = (1/n) sum_i grad f_i(x^{t+1})                              if c_t = 1
             g^{t+1} = g^t + (1/n) sum_i C(grad f_i(x^{t+1}) - grad f_i(x^t))     otherwise
    worker:  sends grad f_i(x^{t+1}) dense (flag bit set) or the compressed difference

    The coin comes from a stream every worker holds a copy of (no bit spent on it);
    the 3PC bound is per worker, so a shared coin satisfies it as independent ones would.
    C is contractive (an unbiased one is scaled by 1/(omega+1)); p = 1 is GD.
    theory:  gamma = 1/(L + L_tilde sqrt(B/A)) (3PC theorem) with A = 1 - sqrt(1 - p),
             B = (1 - p)(1 - alpha)/(1 - sqrt(1 - p)).
    """

    name = "3pcv5"
    resync = SYNC_RESYNC
    worker_resync = staticmethod(sync_resync)
    title = "3PCv5, x with probability p, else h + C(x - y) (same paper)"
    paper = "Richtarik et al. (2022), 3PC: Three point compressors, ICML 2022"
    params = (P,)
    theory = "1/(L + L~ sqrt(B/A)), 3PC with 3PCv5's A = 1 - sqrt(1-p), B = (1-p)(1-alpha)/(1 - sqrt(1-p))"

    def default(self, name, comp):
        return comp.alpha if name == "p" else super().default(name, comp)

    def constants(self, comp, hp):
        return v5_constants(comp.alpha, hp.p)

    worker_init = staticmethod(sync_init)
    worker_step = staticmethod(sync_step)
    master_init = staticmethod(sync_master_init)
    master_step = staticmethod(sync_master_step)
