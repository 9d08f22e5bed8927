from dataclasses import dataclass

import numpy as np

from .base import MasterX, Method, RESEND, batch_params, ef21_gamma, mean_of, register


@dataclass
class EFState:
    e: np.ndarray  # the error e_i^t


@register
class EF14(Method):
    """Original error feedback, EF14 (Seide et al. 2014; Stich, Cordonnier, Jaggi 2018):

    init:    e_i^0 = 0
    worker:  w_i^t = C(e_i^t + gamma grad f_i(x^t));  e_i^{t+1} = e_i^t + gamma grad f_i(x^t) - w_i^t;  send w_i^t
    master:  x^{t+1} = x^t - (1/n) sum_i w_i^t

    With --batch-size B the gradients are minibatch ones (EF14-SGD).
    theory:  none that fits here: the analyses of EF14 for nonconvex f assume
             bounded gradients (Stich, Karimireddy 2019), which the problems
             of psmpi do not satisfy.  'theory' uses the EF21 step
             1/(L + L_tilde sqrt(beta/theta)) for the same alpha instead, so
             that EF14 and EF21 are compared at equal steps, as in the
             experiments of the EF21 paper.
    """

    name = "ef14"
    resync = RESEND
    title = "original error feedback (Seide et al. 2014; Stich et al. 2018)"
    paper = "Seide et al. (2014), 1-bit SGD; Stich, Cordonnier, Jaggi (2018), Sparsified SGD with memory"
    params = batch_params("full")
    theory = "theory gives none without bounded gradients; EF21's step for the same alpha is used"

    def theory_gamma(self, c, comp, hp):
        return ef21_gamma(c.L, c.L_tilde, comp.alpha)

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
