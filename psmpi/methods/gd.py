from dataclasses import dataclass

from .base import MasterG, Method, batch_params, mean_of, register


@dataclass
class NoState:
    pass


def gradient_message(ctx, x):
    """C(grad f_i(x; xi)) (exact with --batch-size full)."""
    return ctx.compress(ctx.sgrad(x))


def averaged_step(hp, ms: MasterG, payloads) -> MasterG:
    """g^t = (1/n) sum_i m_i^t;  x^{t+1} = x^t - gamma g^t."""
    ms.g = mean_of(payloads, ms.x.shape[0])
    ms.x -= hp.gamma * ms.g
    return ms


@register
class GD(Method):
    """Distributed gradient descent, uncompressed (the baseline of every EF paper):

    worker:  send m_i^t = grad f_i(x^t)   (minibatch SGD with --batch-size B)
    master:  x^{t+1} = x^t - gamma (1/n) sum_i m_i^t

    theory:  gamma = 1/L, the classical step for L-smooth f (e.g. Nesterov 2004,
             Lemma 1.2.3, descent lemma); with minibatches no step is derived here.
    """

    name = "gd"
    paper = "Cauchy (1847); the uncompressed baseline of every EF paper"
    compressors = "identity"
    params = batch_params("full")
    theory = "1/L (descent lemma)"

    def theory_gamma(self, c, comp, hp):
        return 1.0 / c.L

    def worker_init(self, ctx, x):
        return NoState(), gradient_message(ctx, x)

    def worker_step(self, ctx, state, x):
        return state, gradient_message(ctx, x)

    def master_init(self, hp, x0, payloads):
        return averaged_step(hp, MasterG(x0.copy(), None), payloads)

    master_step = staticmethod(averaged_step)
