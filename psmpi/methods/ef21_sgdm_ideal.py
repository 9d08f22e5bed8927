from .base import Method, batch_params, register, tracking_init, tracking_step
from .ef21_sgd_ideal import ideal_init, ideal_update
from .ef21_sgdm import ETA, momentum_gamma


@register
class EF21SGDMIdeal(Method):
    """EF21-SGDM-ideal (Fatkhullin, Tyurin, Richtarik 2023, Section 2): momentum
    in the ideal form, without memory,

    init:    g_i^0 = grad f_i(x^0; B_init)
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = (1/n) sum_i g_i^{t+1}
    worker:  v_i^{t+1} = grad f_i(x^{t+1}) + eta (grad f_i(x^{t+1}; xi_i^{t+1}) - grad f_i(x^{t+1}))
             g_i^{t+1} = grad f_i(x^{t+1}) + C(v_i^{t+1} - grad f_i(x^{t+1}))

    so the noise reaching g_i is scaled by eta (variance eta^2 sigma^2), which is
    what removes the lower bound of Theorem 1.  The messages are the changes of
    g_i, sent dense (see ef21_sgd_ideal.py).

    theory:  the paper studies it as a thought experiment and gives it no step of
             its own; 'theory' uses EF21-SGDM's step min{alpha/(20 L_tilde), eta/(7 L)}.
    """

    name = "ef21-sgdm-ideal"
    title = 'the "ideal" EF21-SGDM, no memory (same paper)'
    paper = "Fatkhullin, Tyurin, Richtarik (2023), Momentum provably improves error feedback!, Section 2"
    params = (ETA, *batch_params(1))
    exact_sibling = "ef21"

    theory = "theory gives none of its own; EF21-SGDM's step is used"

    def theory_gamma(self, c, comp, hp):
        return momentum_gamma(c, comp.alpha, hp.eta)

    worker_init = staticmethod(ideal_init)

    def worker_step(self, ctx, st, x):
        exact = ctx.grad(x)
        v = exact + ctx.hp.eta * (ctx.sgrad(x) - exact)
        return ideal_update(ctx, st, exact, v)

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
