"""EF21-SGD-ideal, a theory device of the EF21-SGDM paper (Fatkhullin, Tyurin,
Richtarik 2023, Section 2): the compressor acts around the exact local gradient,
which no real worker could do with compressed messages alone.  Here each worker
sends the change of g_i densely (honest bytes: the variant exists to study the
effect of the stochastic noise, not to save bits), so the master still holds
g = mean_i g_i.
"""
from dataclasses import dataclass

import numpy as np

from .base import Method, batch_params, ef21_gamma, register, tracking_init, tracking_step, wire_copy


@dataclass
class IdealState:
    g: np.ndarray  # g_i^t


def ideal_update(ctx, st: IdealState, exact, target):
    """g_i^{t+1} = exact + C(target - exact); the message is g_i^{t+1} - g_i^t, dense."""
    new_g = exact + ctx.compress(target - exact).to_dense(like=exact)
    msg = ctx.dense(new_g - st.g)
    msg.add_to(st.g)
    return st, msg


def ideal_init(ctx, x):
    """g_i^0 = grad f_i(x^0; B_init), sent dense."""
    msg = ctx.dense(ctx.init_grad(x))
    return IdealState(wire_copy(msg)), msg


@register
class EF21SGDIdeal(Method):
    """EF21-SGD-ideal (Fatkhullin, Tyurin, Richtarik 2023, eq. (6) and Theorem 1):

    init:    g_i^0 = grad f_i(x^0; B_init)
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = (1/n) sum_i g_i^{t+1}
    worker:  g_i^{t+1} = grad f_i(x^{t+1}) + C(grad f_i(x^{t+1}; xi_i^{t+1}) - grad f_i(x^{t+1}))

    theory:  none that converges.  Theorem 1: on f = 1/2 ||x||^2 with Gaussian gradient noise and Top-1, for
    every constant step it stays away from the solution (E||grad f||^2 bounded
    below by a multiple of sigma^2): theory gives no step that converges.
    'theory' uses the EF21 step 1/(L + L_tilde sqrt(beta/theta)) instead, the
    step its comparison with EF21-SGDM starts from.
    """

    name = "ef21-sgd-ideal"
    title = 'the "ideal" EF21-SGD of the same paper (a theory device)'
    paper = "Fatkhullin, Tyurin, Richtarik (2023), Momentum provably improves error feedback!, Theorem 1"
    params = batch_params(1)
    exact_sibling = "ef21"
    theory = "theory gives none (Theorem 1: no constant step converges); EF21's step is used"

    def theory_gamma(self, c, comp, hp):
        return ef21_gamma(c.L, c.L_tilde, comp.alpha)

    worker_init = staticmethod(ideal_init)

    def worker_step(self, ctx, st, x):
        exact = ctx.grad(x)
        return ideal_update(ctx, st, exact, ctx.sgrad(x))

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
