from dataclasses import dataclass, replace

import numpy as np

from .base import MasterG, apply, register
from .ef21 import EF21


@dataclass
class MasterPlus(MasterG):
    G: np.ndarray  # (n, d): each worker's g_i, which a replacing message needs


@register
class EF21Plus(EF21):
    """EF21+ (Richtarik, Sokolov, Fatkhullin 2021, Section on EF21+): each worker
    keeps whichever of the EF21 update b_i = g_i^t + C(grad f_i(x^{t+1}) - g_i^t)
    and the plain compression m_i = C(grad f_i(x^{t+1})) is closer to the gradient,

    g_i^{t+1} = m_i if ||m_i - grad f_i|| < ||b_i - grad f_i|| else b_i,
    g^{t+1} = (1/n) sum_i g_i^{t+1},  x^{t+1} = x^t - gamma g^t.

    The message is C(grad f_i - g_i^t) or m_i with the flag bit set.  To apply a
    replacement the master must know every g_i, so EF21+ keeps an n x d array
    on the master (the one method that does).  Step 'theory': the EF21 step.
    """

    name = "ef21-plus"

    def worker_step(self, ctx, st, x):
        grad = ctx.grad(x)
        c = ctx.compress(grad - st.g)
        b = apply(c, st.g.copy())
        m = ctx.compress(grad)
        md = m.to_dense(like=grad)
        if np.linalg.norm(md - grad) < np.linalg.norm(b - grad):
            st.g[:] = md
            return st, replace(m, flag=True)
        st.g = b
        return st, c

    def master_init(self, hp, x0, payloads):
        ms = super().master_init(hp, x0, payloads)
        G = np.stack([p.to_dense() for p in payloads])
        return MasterPlus(ms.x, ms.g, G)

    def master_step(self, hp, ms, payloads):
        for i, p in enumerate(payloads):
            if p.flag:
                ms.G[i] = 0.0
            p.add_to(ms.G[i])
        ms.g = ms.G.mean(axis=0)
        ms.x -= hp.gamma * ms.g
        return ms
