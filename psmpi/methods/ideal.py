"""The "ideal" theory variants of the EF21-SGDM paper (Fatkhullin, Tyurin,
Richtarik 2023, Section 2): the compressor acts around the exact local gradient,
which no real worker could send compressed.  Here each worker sends the change
of g_i densely (honest bytes: the variants are a theory device), so the master
still holds g = mean g_i.
"""
from dataclasses import dataclass

import numpy as np

from .base import Method, apply, register


@dataclass
class IdealState:
    g: np.ndarray
    v: np.ndarray | None = None


@register
class EF21SGDIdeal(Method):
    """EF21-SGD-ideal: g_i^{t+1} = grad f_i(x^{t+1}) + C(grad f_i(x^{t+1}; xi) - grad f_i(x^{t+1})),
    x^{t+1} = x^t - gamma g^t.  Diverges on f = 1/2||x||^2 with noisy gradients
    for Top-1 and any constant step (the paper's Theorem 1)."""

    name = "ef21-sgd-ideal"
    paper = "Fatkhullin, Tyurin, Richtarik (2023), Momentum provably improves error feedback!, Theorem 1"
    stochastic = True

    def worker_init(self, ctx, x):
        msg = ctx.dense(ctx.init_grad(x))
        return IdealState(msg.values.astype(np.float64)), msg

    def target(self, ctx, st, x):
        return ctx.sgrad(x)

    def worker_step(self, ctx, st, x):
        exact = ctx.grad(x)
        new_g = exact + ctx.compress(self.target(ctx, st, x) - exact).to_dense(like=exact)
        msg = ctx.dense(new_g - st.g)
        apply(msg, st.g)
        return st, msg


@register
class EF21SGDMIdeal(EF21SGDIdeal):
    """EF21-SGDM-ideal: v_i^{t+1} = (1 - eta) v_i^t + eta grad f_i(x^{t+1}; xi),
    g_i^{t+1} = grad f_i(x^{t+1}) + C(v_i^{t+1} - grad f_i(x^{t+1})), x^{t+1} = x^t - gamma g^t."""

    name = "ef21-sgdm-ideal"

    def worker_init(self, ctx, x):
        st, msg = super().worker_init(ctx, x)
        st.v = st.g.copy()
        return st, msg

    def target(self, ctx, st, x):
        st.v *= 1.0 - ctx.hp.eta
        st.v += ctx.hp.eta * ctx.sgrad(x)
        return st.v
