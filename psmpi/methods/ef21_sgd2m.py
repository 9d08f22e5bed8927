from dataclasses import dataclass

import numpy as np

from .base import Method, batch_params, register, tracking_init, tracking_step, wire_copy
from .ef21_sgdm import ETA, momentum_gamma


@dataclass
class DoubleMomentumState:
    g: np.ndarray  # g_i^t
    v: np.ndarray  # v_i^t, the first momentum
    u: np.ndarray  # u_i^t, the second momentum


@register
class EF21SGD2M(Method):
    """EF21-SGD2M, double momentum (Fatkhullin, Tyurin, Richtarik, "Momentum
    provably improves error feedback!", NeurIPS 2023, Algorithm 3):

    init:    u_i^0 = v_i^0 = g_i^0 = grad f_i(x^0; B_init), g_i^0 sent dense
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i c_i^t
    worker:  v_i^{t+1} = (1 - eta) v_i^t + eta grad f_i(x^{t+1}; xi_i^{t+1})
             u_i^{t+1} = (1 - eta) u_i^t + eta v_i^{t+1}
             c_i^t = C(u_i^{t+1} - g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t

    theory:  gamma = min{alpha/(20 L_tilde), eta/(7 L)}, the step condition of the paper's
             theorem for EF21-SGD2M (same form as Theorem 3); it shrinks with eta, and a step that ignores eta diverges for
             small eta (the method-layer issue's example).  The form
             min{c alpha/L_tilde, c' eta/L} is the theorem's; the constants 20 and 7
             are as we read them and could not be re-checked against the paper's
             text where this was written.
    """

    name = "ef21-sgd2m"
    title = "EF21-SGD2M, double momentum (same paper)"
    paper = "Fatkhullin, Tyurin, Richtarik (2023), Momentum provably improves error feedback!, NeurIPS 2023"
    params = (ETA, *batch_params(1))
    exact_sibling = "ef21"

    theory = "min{alpha/(20 L~), eta/(7 L)}, EF21-SGDM paper, EF21-SGD2M theorem"

    def theory_gamma(self, c, comp, hp):
        return momentum_gamma(c, comp.alpha, hp.eta)

    def worker_init(self, ctx, x):
        v = ctx.init_grad(x)
        msg = ctx.dense(v)
        return DoubleMomentumState(wire_copy(msg), v.copy(), v.copy()), msg

    def worker_step(self, ctx, st, x):
        eta = ctx.hp.eta
        st.v *= 1.0 - eta
        st.v += eta * ctx.sgrad(x)
        st.u *= 1.0 - eta
        st.u += eta * st.v
        return st, ctx.ef21_update(st.u, st.g)

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
