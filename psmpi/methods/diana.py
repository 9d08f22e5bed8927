from dataclasses import dataclass

import numpy as np

from .base import Method, mean_of, register


@dataclass
class ShiftState:
    h: np.ndarray  # the shift h_i


@dataclass
class MasterShift:
    x: np.ndarray
    h: np.ndarray  # mean of the shifts


@register
class DIANA(Method):
    """DIANA (Mishchenko, Gorbunov, Takac, Richtarik 2019, "Distributed learning
    with compressed gradient differences"):

    m_i^t = C(grad f_i(x^t) - h_i^t),  h_i^{t+1} = h_i^t + a m_i^t,  h_i^0 = 0,
    g^t = h^t + (1/n) sum_i m_i^t,  h^{t+1} = h^t + a (1/n) sum_i m_i^t,
    x^{t+1} = x^t - gamma g^t.

    C must be unbiased (omega); the shift step a defaults to 1/(omega + 1).
    With ``--batch-size`` the gradients are minibatch ones.
    Step 'theory': 1/(L (1 + 2 omega / n)) (the paper's smooth-case choice).
    """

    name = "diana"
    paper = "Mishchenko, Gorbunov, Takac, Richtarik (2019), Distributed learning with compressed gradient differences"
    compressors = "unbiased"

    def resolve_hyper(self, hp, comp):
        if hp.shift_step is None:
            hp.shift_step = 1.0 / (comp.omega + 1.0)

    def theory_gamma(self, L, Lt, comp, hp):
        return 1.0 / (L * (1.0 + 2.0 * comp.omega / hp.n))

    def worker_init(self, ctx, x):
        return self.worker_step(ctx, ShiftState(np.zeros_like(x, dtype=np.float64)), x)

    def worker_step(self, ctx, st, x):
        m = ctx.compress(ctx.sgrad(x) - st.h)
        m.add_to(st.h, ctx.hp.shift_step)
        return st, m

    def master_init(self, hp, x0, payloads):
        return self.master_step(hp, MasterShift(x0.copy(), np.zeros_like(x0)), payloads)

    def master_step(self, hp, ms, payloads):
        acc = mean_of(payloads, ms.x.shape[0])
        ms.x -= hp.gamma * (ms.h + acc)
        ms.h += hp.shift_step * acc
        return ms
