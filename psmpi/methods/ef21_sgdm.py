from dataclasses import dataclass

import numpy as np

from .base import Method, Param, batch_params, register, tracking_init, tracking_step, wire_copy

ETA = Param("eta", "float", 0.1, "momentum parameter eta of EF21-SGDM, EF21-SGD2M and EF21-SGDM-ideal", low=0.0,
            high=1.0, in_theory=True, symbol="η")


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

    theory:  SEE_THEORY
    """

    name = "ef21-sgdm"
    paper = "Fatkhullin, Tyurin, Richtarik (2023), Momentum provably improves error feedback!, NeurIPS 2023"
    params = (ETA, *batch_params(1))
    exact_sibling = "ef21"

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
