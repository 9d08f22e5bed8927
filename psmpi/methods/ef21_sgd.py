from .base import register
from .ef21 import EF21


@register
class EF21SGD(EF21):
    """EF21-SGD (Fatkhullin, Sokolov, Gorbunov, Li, Richtarik 2021, "EF21 with
    bells & whistles"): EF21 with minibatch gradients,

    g_i^0 = grad f_i(x^0; B_init),  c_i^t = C(grad f_i(x^{t+1}; xi_i^{t+1}) - g_i^t),
    g_i^{t+1} = g_i^t + c_i^t,  x^{t+1} = x^t - gamma g^t.

    Without large batches it can diverge (Fatkhullin, Tyurin, Richtarik 2023).
    Step 'theory': the EF21 step.
    """

    name = "ef21-sgd"
    paper = "Fatkhullin, Sokolov, Gorbunov, Li, Richtarik (2021), EF21 with bells & whistles"
    stochastic = True

    def estimate(self, ctx, st, x):
        return ctx.sgrad(x)

    def init_estimate(self, ctx, x):
        return ctx.init_grad(x)
