from dataclasses import dataclass

import numpy as np

from .base import Method, register


@dataclass
class MomentumState:
    g: np.ndarray
    v: np.ndarray
    u: np.ndarray | None = None


@register
class EF21SGDM(Method):
    """EF21-SGDM (Fatkhullin, Tyurin, Richtarik 2023, "Momentum provably
    improves error feedback!", NeurIPS 2023):

    v_i^{t+1} = (1 - eta) v_i^t + eta grad f_i(x^{t+1}; xi_i^{t+1}),
    c_i^t = C(v_i^{t+1} - g_i^t),  g_i^{t+1} = g_i^t + c_i^t,
    x^{t+1} = x^t - gamma g^t,  g^{t+1} = g^t + (1/n) sum_i c_i^t,
    v_i^0 = g_i^0 = grad f_i(x^0; B_init).

    Step 'theory': the EF21 step for the compressor's alpha (the paper's bound
    adds eta-dependent terms; scale with --gamma-factor as its experiments do).
    """

    name = "ef21-sgdm"
    paper = "Fatkhullin, Tyurin, Richtarik (2023), Momentum provably improves error feedback!"
    stochastic = True
    double = False

    def worker_init(self, ctx, x):
        v = ctx.init_grad(x)
        msg = ctx.dense(v)
        g = msg.values.astype(np.float64)
        return MomentumState(g, v.copy(), v.copy() if self.double else None), msg

    def worker_step(self, ctx, st, x):
        eta = ctx.hp.eta
        st.v *= 1.0 - eta
        st.v += eta * ctx.sgrad(x)
        target = st.v
        if self.double:
            st.u *= 1.0 - eta
            st.u += eta * st.v
            target = st.u
        return st, ctx.ef_update(target, st.g)


@register
class EF21SGD2M(EF21SGDM):
    """EF21-SGD2M, double momentum (Fatkhullin, Tyurin, Richtarik 2023):

    v_i^{t+1} = (1 - eta) v_i^t + eta grad f_i(x^{t+1}; xi_i^{t+1}),
    u_i^{t+1} = (1 - eta) u_i^t + eta v_i^{t+1},
    c_i^t = C(u_i^{t+1} - g_i^t),  g_i^{t+1} = g_i^t + c_i^t,  x^{t+1} = x^t - gamma g^t,
    u_i^0 = v_i^0 = g_i^0 = grad f_i(x^0; B_init).
    """

    name = "ef21-sgd2m"
    double = True
