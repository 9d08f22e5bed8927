import math
from dataclasses import dataclass

import numpy as np

from .base import MasterG, Method, Param, mean_of, register

P = Param("p", "float", None, "probability p of a round in which every worker sends its full gradient dense "
          "(one coin shared by all) [default: the compressor's alpha, 1/(omega+1) for an unbiased one]", low=0.0,
          high=1.0, in_theory=True, symbol="p")


@dataclass
class MarinaState:
    h: np.ndarray  # grad f_i(x^t), the last gradient


def sync_init(ctx, x):
    """Round 0: grad f_i(x^0) sent dense (flag set: the master takes the mean)."""
    grad = ctx.grad(x)
    return MarinaState(grad.copy()), ctx.dense(grad, flag=True)


def sync_step(ctx, st, x):
    """With the shared coin (probability p) grad f_i(x^{t+1}) dense, flag set; else
    C(grad f_i(x^{t+1}) - grad f_i(x^t))."""
    grad = ctx.grad(x)
    if ctx.common.random() < ctx.hp.p:
        msg = ctx.dense(grad, flag=True)
    else:
        msg = ctx.compress(grad - st.h)
    st.h = grad.copy()
    return st, msg


def sync_master_step(hp, ms, payloads):
    """g^{t+1} = mean of the messages on a sync round (flag set), else g^t + their mean;
    x^{t+2} = x^{t+1} - gamma g^{t+1}."""
    flags = {p.flag for p in payloads}
    if len(flags) != 1:
        raise ValueError("the workers disagree on the synchronisation coin")
    acc = mean_of(payloads, ms.x.shape[0])
    if flags.pop():
        ms.g = acc
    else:
        ms.g += acc
    ms.x -= hp.gamma * ms.g
    return ms


def sync_resync(ctx, st):
    """After a worker failure: a survivor sends grad f_i(x^t) dense with the flag set,
    so the master's g becomes the survivors' mean gradient (a synchronisation round)."""
    return ctx.dense(st.h, flag=True)


SYNC_RESYNC = ("each survivor sends its last gradient dense with the sync flag (counted in bytes_up): "
               "the round becomes a synchronisation round over the survivors")


def sync_master_init(hp, x0, payloads):
    return sync_master_step(hp, MasterG(x0.copy(), np.zeros_like(x0)), payloads)


@register
class MARINA(Method):
    """MARINA (Gorbunov, Burlachenko, Li, Richtarik, "MARINA: Faster non-convex
    distributed learning with compression", ICML 2021, Algorithm 1):

    init:    g^0 = grad f(x^0): every worker sends grad f_i(x^0) dense
    master:  x^{t+1} = x^t - gamma g^t;  draw c_t ~ Bernoulli(p), one coin shared by all
             g^{t+1} = (1/n) sum_i grad f_i(x^{t+1})                              if c_t = 1
             g^{t+1} = g^t + (1/n) sum_i C(grad f_i(x^{t+1}) - grad f_i(x^t))     otherwise
    worker:  sends grad f_i(x^{t+1}) dense (flag bit set) or the compressed difference

    C must be unbiased (omega).  The coin comes from a stream every worker holds
    a copy of, so no bit is spent on it.
    theory:  gamma = 1/(L + L_tilde sqrt((1 - p) omega / (p n))): Theorem 2.1 in the form
             the 3PC paper gives it (MARINA as a 3PC method with A = p, B = (1 - p) omega/n;
             the MARINA paper writes one constant L >= L_- for both terms).
    """

    name = "marina"
    resync = SYNC_RESYNC
    worker_resync = staticmethod(sync_resync)
    title = "MARINA (Gorbunov et al. 2021)"
    paper = "Gorbunov, Burlachenko, Li, Richtarik (2021), MARINA, ICML 2021"
    compressors = "unbiased"
    params = (P,)
    theory = "1/(L + L~ sqrt((1-p) omega/(p n))), MARINA Theorem 2.1 as refined by the 3PC paper"
    independent_compressors = True  # omega/n: the n compressors drawn independently

    def default(self, name, comp):
        return 1.0 / (comp.omega + 1.0) if name == "p" else super().default(name, comp)

    def theory_gamma(self, c, comp, hp):
        return 1.0 / (c.L + c.L_tilde * math.sqrt((1.0 - hp.p) * comp.omega / (hp.p * hp.n)))

    def worker_init(self, ctx, x):
        return sync_init(ctx, x)

    def worker_step(self, ctx, st, x):
        return sync_step(ctx, st, x)

    master_init = staticmethod(sync_master_init)
    master_step = staticmethod(sync_master_step)
