from dataclasses import dataclass

from .base import MasterG, Method, RESEND, batch_params, mean_of, register


@dataclass
class NoState:
    pass


def send_gradient_init(ctx, x):
    """m_i^0 = C(grad f_i(x^0; xi)) (exact with --batch-size full); no state."""
    return NoState(), ctx.compress(ctx.sgrad(x))


def send_gradient(ctx, state, x):
    """m_i^t = C(grad f_i(x^t; xi))."""
    return state, ctx.compress(ctx.sgrad(x))


def averaged_step(hp, ms: MasterG, payloads) -> MasterG:
    """g^t = (1/n) sum_i m_i^t;  x^{t+1} = x^t - gamma g^t."""
    ms.g = mean_of(payloads, ms.x.shape[0])
    ms.x -= hp.gamma * ms.g
    return ms


def averaged_init(hp, x0, payloads) -> MasterG:
    """The averaged step from x^0."""
    return averaged_step(hp, MasterG(x0.copy(), None), payloads)


@register
class GD(Method):
    """Distributed gradient descent, uncompressed (the baseline of every EF paper):

    worker:  send m_i^t = grad f_i(x^t)   (minibatch SGD with --batch-size B)
    master:  x^{t+1} = x^t - gamma (1/n) sum_i m_i^t

    theory:  gamma = 1/L, the classical step for L-smooth f (e.g. Nesterov 2004,
             Lemma 1.2.3, descent lemma); with minibatches no step is derived here.
    """

    name = "gd"
    resync = RESEND
    title = "distributed gradient descent (uncompressed baseline)"
    paper = "Cauchy (1847); the uncompressed baseline of every EF paper"
    compressors = "identity"
    params = batch_params("full")
    theory = "1/L (descent lemma)"

    def theory_gamma(self, c, comp, hp):
        return 1.0 / c.L

    worker_init = staticmethod(send_gradient_init)
    worker_step = staticmethod(send_gradient)
    master_init = staticmethod(averaged_init)
    master_step = staticmethod(averaged_step)
