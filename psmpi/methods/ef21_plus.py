from dataclasses import dataclass, replace

import numpy as np

from .base import MasterG, Method, ef21_gamma, register, send_g, tracking_init, wire_copy
from .ef21 import GState


@dataclass
class MasterPlus(MasterG):
    G: np.ndarray  # (n, d): each worker's g_i, which a replacing message needs


@register
class EF21Plus(Method):
    """EF21+ (Richtarik, Sokolov, Fatkhullin, NeurIPS 2021, Algorithm 3): each
    worker keeps whichever of the EF21 update and the plain compression of its
    gradient is closer to the gradient,

    init:    g_i^0 = grad f_i(x^0), sent dense
    worker:  b_i = g_i^t + C(grad f_i(x^{t+1}) - g_i^t),  m_i = C(grad f_i(x^{t+1}))
             g_i^{t+1} = m_i if ||m_i - grad f_i(x^{t+1})|| < ||b_i - grad f_i(x^{t+1})|| else b_i
             send C(grad f_i - g_i^t), or m_i with the flag bit set
    master:  g^{t+1} = (1/n) sum_i g_i^{t+1};  x^{t+2} = x^{t+1} - gamma g^{t+1}

    To apply a replacement the master must know every g_i, so EF21+ keeps an
    n x d array on the master (the one method that does).
    theory:  the EF21 step 1/(L + L_tilde sqrt(beta/theta)): EF21+'s g_i obeys
             the same contraction as EF21's, so Theorem 1 applies unchanged.
    """

    name = "ef21-plus"
    resync = "each survivor sends its g_i dense in float64 (counted in bytes_up); the master's n x d array becomes theirs"
    worker_resync = staticmethod(send_g)
    title = "EF21+ (same paper)"
    paper = "Richtarik, Sokolov, Fatkhullin (2021), EF21, NeurIPS 2021"
    theory = "1/(L + L~ sqrt(beta/theta)), as EF21 (Theorem 1)"

    def theory_gamma(self, c, comp, hp):
        return ef21_gamma(c.L, c.L_tilde, comp.alpha)

    def worker_init(self, ctx, x):
        msg = ctx.dense(ctx.grad(x))
        return GState(wire_copy(msg)), msg

    def worker_step(self, ctx, st, x):
        grad = ctx.grad(x)
        c = ctx.compress(grad - st.g)
        b = st.g.copy()
        c.add_to(b)
        m = ctx.compress(grad)
        md = m.to_dense(like=grad)
        if np.linalg.norm(md - grad) < np.linalg.norm(b - grad):
            st.g[:] = md
            return st, replace(m, flag=True)
        st.g = b
        return st, c

    def master_init(self, hp, x0, payloads):
        ms = tracking_init(hp, x0, payloads)
        return MasterPlus(ms.x, ms.g, np.stack([p.to_dense() for p in payloads]))

    def master_resync(self, hp, ms, x, payloads, t):
        return self.master_init(hp, x, payloads)  # G = the survivors' g_i, g their mean, then the step

    def master_step(self, hp, ms, payloads):
        for i, p in enumerate(payloads):
            if p.flag:
                ms.G[i] = 0.0
            p.add_to(ms.G[i])
        ms.g = ms.G.mean(axis=0)
        ms.x -= hp.gamma * ms.g
        return ms
