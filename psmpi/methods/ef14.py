from dataclasses import dataclass

import numpy as np

from .base import Method, mean_of, register


@dataclass
class EFState:
    e: np.ndarray  # the error e_i^{t+1}


@dataclass
class MasterX:
    x: np.ndarray


@register
class EF14(Method):
    """Original error feedback, EF14 (Seide et al. 2014; Stich et al. 2018):

    w_i^t = C(e_i^t + gamma grad f_i(x^t)),  e_i^{t+1} = e_i^t + gamma grad f_i(x^t) - w_i^t,
    e_i^0 = 0 (so w_i^0 = C(gamma grad f_i(x^0))),  x^{t+1} = x^t - (1/n) sum_i w_i^t.

    With ``--batch-size`` the gradients are minibatch ones (EF14-SGD).
    Step 'theory': the EF21 step (EF14's own theory needs bounded gradients).
    """

    name = "ef14"
    paper = "Seide et al. (2014), 1-bit SGD; Stich, Cordonnier, Jaggi (2018), Sparsified SGD with memory"

    def worker_init(self, ctx, x):
        return self.worker_step(ctx, EFState(np.zeros_like(x, dtype=np.float64)), x)

    def worker_step(self, ctx, st, x):
        st.e += ctx.hp.gamma * ctx.sgrad(x)
        w = ctx.compress(st.e)
        w.add_to(st.e, -1.0)
        return st, w

    def master_init(self, hp, x0, payloads):
        return self.master_step(hp, MasterX(x0.copy()), payloads)

    def master_step(self, hp, ms, payloads):
        ms.x -= mean_of(payloads, ms.x.shape[0])
        return ms
