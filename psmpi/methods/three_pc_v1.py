from dataclasses import dataclass

import numpy as np

from .base import RESEND, ThreePC, register
from .gd import averaged_init, averaged_step


def v1_constants(alpha: float) -> tuple[float, float]:
    """(A, B) = (1, 1 - alpha) of C_{h,y}(x) = y + C(x - y) (3PC paper, 3PCv1)."""
    return 1.0, 1.0 - alpha


@dataclass
class LastGrad:
    h: np.ndarray  # grad f_i(x^t), the last gradient


@register
class ThreePCv1(ThreePC):
    """3PCv1 (Richtarik, Sokolov, Fatkhullin, Gasanov, Li, Gorbunov, "3PC: Three point
    compressors for communication-efficient distributed training and a better theory
    for lazy aggregation", ICML 2022), the 3PC method with C_{h,y}(x) = y + C(x - y):

    init:    g_i^0 = grad f_i(x^0), sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = (1/n) sum_i g_i^{t+1}
    worker:  g_i^{t+1} = grad f_i(x^t) + C(grad f_i(x^{t+1}) - grad f_i(x^t));  send g_i^{t+1} dense

    What travels: the master knows neither grad f_i(x^t) nor g_i^t of a worker, and
    g_i^{t+1} - g_i^t = (grad f_i(x^t) - g_i^t) + C(...) is a dense vector in general, so
    the worker sends g_i^{t+1} itself, d values: as many bytes as uncompressed GD.  The
    construction is a theoretical one (the paper calls 3PCv1 impractical); its measured
    bytes say so.
    theory:  gamma = 1/(L + L_tilde sqrt(B/A)) (3PC paper, its theorem for three-point
             compressors, L and L_tilde in the places of L_- and L_+) with A = 1,
             B = 1 - alpha.
    """

    name = "3pcv1"
    resync = RESEND
    title = "3PCv1, y + C(x - y): sends g_i dense, impractical (Richtarik et al. 2022)"
    paper = "Richtarik et al. (2022), 3PC: Three point compressors, ICML 2022"
    theory = "1/(L + L~ sqrt(B/A)), 3PC with 3PCv1's A = 1, B = 1 - alpha"

    def constants(self, comp, hp):
        return v1_constants(comp.alpha)

    def worker_init(self, ctx, x):
        grad = ctx.grad(x)
        return LastGrad(grad.copy()), ctx.dense(grad)

    def worker_step(self, ctx, st, x):
        grad = ctx.grad(x)
        g = st.h.copy()
        ctx.compress(grad - st.h).add_to(g)
        st.h = grad.copy()
        return st, ctx.dense(g)

    master_init = staticmethod(averaged_init)
    master_step = staticmethod(averaged_step)
