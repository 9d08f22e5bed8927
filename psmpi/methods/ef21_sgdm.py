from dataclasses import dataclass

import numpy as np

from .base import Method, Param, batch_params, register, tracking_init, tracking_step, wire_copy

ETA = Param("eta", "float", 0.1, "momentum parameter eta of EF21-SGDM, EF21-SGD2M and EF21-SGDM-ideal", low=0.0,
            high=1.0, in_theory=True, symbol="η")


def momentum_gamma(c, alpha: float, eta: float) -> float:
    """gamma = min{alpha/(20 L_tilde), eta/(7 L)} (EF21-SGDM paper, its theorems for
    EF21-SGDM and EF21-SGD2M)."""
    return min(alpha / (20.0 * c.L_tilde), eta / (7.0 * c.L))


@dataclass
class MomentumState:
    g: np.ndarray  # g_i^t
    v: np.ndarray  # v_i^t, the momentum


@register
class EF21SGDM(Method):
    """EF21-SGDM (Fatkhullin, Tyurin, Richtarik, "Momentum provably improves
    error feedback!", NeurIPS 2023, Algorithm 1):

    init:    v_i^0 = g_i^0 = grad f_i(x^0; B_init), g_i^0 sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i c_i^t
    worker:  v_i^{t+1} = (1 - eta) v_i^t + eta grad f_i(x^{t+1}; xi_i^{t+1})
             c_i^t = C(v_i^{t+1} - g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t

    theory:  gamma = min{alpha/(20 L_tilde), eta/(7 L)}, the step condition of the paper's
             Theorem 3 (EF21-SGDM); it shrinks with eta, and a step that ignores eta diverges for
             small eta (the method-layer issue's example).  The form
             min{c alpha/L_tilde, c' eta/L} is the theorem's; the constants 20 and 7
             are as we read them and could not be re-checked against the paper's
             text where this was written.
    """

    name = "ef21-sgdm"
    title = "EF21-SGDM, Polyak momentum (Fatkhullin, Tyurin, Richtarik 2023)"
    paper = "Fatkhullin, Tyurin, Richtarik (2023), Momentum provably improves error feedback!, NeurIPS 2023"
    params = (ETA, *batch_params(1))
    exact_sibling = "ef21"

    theory = "min{alpha/(20 L~), eta/(7 L)}, EF21-SGDM paper Theorem 3"

    def theory_gamma(self, c, comp, hp):
        return momentum_gamma(c, comp.alpha, hp.eta)

    def worker_init(self, ctx, x):
        v = ctx.init_grad(x)
        msg = ctx.dense(v)
        return MomentumState(wire_copy(msg), v.copy()), msg

    def worker_step(self, ctx, st, x):
        eta = ctx.hp.eta
        st.v *= 1.0 - eta
        st.v += eta * ctx.sgrad(x)
        return st, ctx.ef21_update(st.v, st.g)

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
