from dataclasses import dataclass

import numpy as np

from .base import Method, register, tracking_init, tracking_step, wire_copy, ef21_gamma


@dataclass
class GState:
    g: np.ndarray  # g_i^t, equal to what the master has accumulated for this worker


@register
class EF21(Method):
    """EF21 (Richtarik, Sokolov, Fatkhullin, NeurIPS 2021, "EF21: A new, simpler,
    theoretically better, and practically faster error feedback"), Algorithm 1:

    init:    g_i^0 = grad f_i(x^0), sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i c_i^t
    worker:  c_i^t = C(grad f_i(x^{t+1}) - g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t

    theory:  gamma = 1/(L + L_tilde sqrt(beta/theta)), theta = 1 - sqrt(1 - alpha),
             beta = (1 - alpha)/(1 - sqrt(1 - alpha))  (Theorem 1)
    """

    name = "ef21"
    title = "EF21 (Richtarik, Sokolov, Fatkhullin 2021)"
    paper = "Richtarik, Sokolov, Fatkhullin (2021), EF21, NeurIPS 2021"
    stochastic_sibling = "ef21-sgd"
    theory = "1/(L + L~ sqrt(beta/theta)), EF21 Theorem 1"

    def theory_gamma(self, c, comp, hp):
        return ef21_gamma(c.L, c.L_tilde, comp.alpha)

    def worker_init(self, ctx, x):
        msg = ctx.dense(ctx.grad(x))
        return GState(wire_copy(msg)), msg

    def worker_step(self, ctx, st, x):
        return st, ctx.ef21_update(ctx.grad(x), st.g)

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
