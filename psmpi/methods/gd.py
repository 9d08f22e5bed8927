from dataclasses import dataclass

from .base import MasterG, Method, mean_of, register


@dataclass
class NoState:
    pass


@register
class GD(Method):
    """Distributed gradient descent, uncompressed (the baseline).

    x^{t+1} = x^t - gamma (1/n) sum_i grad f_i(x^t).  Step 'theory': 1/L.
    With ``--batch-size`` it is minibatch SGD.
    """

    name = "gd"
    paper = "Cauchy (1847); the uncompressed baseline of every EF paper"
    compressors = "identity"

    def theory_gamma(self, L, Lt, comp, hp):
        return 1.0 / L

    def worker_init(self, ctx, x):
        return NoState(), ctx.compress(ctx.sgrad(x))

    def worker_step(self, ctx, state, x):
        return state, ctx.compress(ctx.sgrad(x))

    def master_init(self, hp, x0, payloads):
        g = mean_of(payloads, x0.shape[0])
        return MasterG(x0 - hp.gamma * g, g)

    def master_step(self, hp, ms, payloads):
        ms.g = mean_of(payloads, ms.x.shape[0])
        ms.x -= hp.gamma * ms.g
        return ms
