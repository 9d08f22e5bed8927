import math
from dataclasses import dataclass

import numpy as np

from .base import Method, Param, batch_params, mean_of, register

SHIFT = Param("shift_step", "float", None, "DIANA's shift step a of h_i [default: 1/(omega+1)]", low=0.0, high=1.0,
              in_theory=True, symbol="a")


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
    with compressed gradient differences", Algorithm 1):

    init:    h_i^0 = 0, h^0 = 0
    worker:  m_i^t = C(grad f_i(x^t) - h_i^t);  h_i^{t+1} = h_i^t + a m_i^t;  send m_i^t
    master:  g^t = h^t + (1/n) sum_i m_i^t;  h^{t+1} = h^t + a (1/n) sum_i m_i^t;  x^{t+1} = x^t - gamma g^t

    C must be unbiased (omega); a defaults to 1/(omega + 1).  With --batch-size B
    the gradients are minibatch ones.
    theory:  gamma = 1/(10 L sqrt(1 + omega/n) (omega + 2)) with a = 1/(omega + 1): the
             nonconvex theorem for (VR-)DIANA of Horvath, Kovalev, Mishchenko, Stich,
             Richtarik (2019, "Stochastic distributed learning with gradient
             quantization and variance reduction", Theorem 4) with full local
             gradients (m = 1): 1/(10 L sqrt(1 + omega/n) (m^(2/3) + omega + 1)).
    """

    name = "diana"
    title = "DIANA (Mishchenko et al. 2019)"
    paper = "Mishchenko, Gorbunov, Takac, Richtarik (2019), Distributed learning with compressed gradient differences"
    compressors = "unbiased"
    params = (SHIFT, *batch_params("full"))

    def default(self, name, comp):
        return 1.0 / (comp.omega + 1.0) if name == "shift_step" else super().default(name, comp)

    theory = "1/(10 L sqrt(1 + omega/n)(omega + 2)), Horvath et al. 2019 Theorem 4 (m = 1)"
    independent_compressors = True  # omega/n: the n compressors drawn independently

    def theory_gamma(self, c, comp, hp):
        return 1.0 / (10.0 * c.L * math.sqrt(1.0 + comp.omega / hp.n) * (comp.omega + 2.0))

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
