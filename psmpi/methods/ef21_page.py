from dataclasses import dataclass

import numpy as np

from .base import Method, Param, batch_params, ef21_gamma, register, tracking_init, tracking_step, wire_copy

PAGE_P = Param("page_p", "float", 0.1, "probability of an EF21-PAGE round in which every worker computes its "
               "exact local gradient (one coin shared by all; the paper's code uses the mean of B/(B + m_i), "
               "m_i the local rows)", low=0.0, high=1.0, symbol="p")


@dataclass
class PageState:
    g: np.ndarray  # g_i^t, equal to what the master has accumulated for this worker
    v: np.ndarray  # v_i^t, the PAGE estimator of grad f_i(x^t)
    x: np.ndarray  # x^t, where the next minibatch difference starts


@register
class EF21PAGE(Method):
    """EF21-PAGE (Fatkhullin, Sokolov, Gorbunov, Li, Richtarik 2021, "EF21 with bells &
    whistles"): EF21 on PAGE's variance-reduced estimator of each finite sum
    f_i = (1/m_i) sum_j f_ij (the update as in the authors' code):

    init:    v_i^0 = g_i^0 = grad f_i(x^0), g_i^0 sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i c_i^t
    worker:  one coin c_t ~ Bernoulli(p) shared by all workers (a common stream, no bit spent):
             v_i^{t+1} = grad f_i(x^{t+1})                                                   if c_t = 1
             v_i^{t+1} = v_i^t + (1/B) sum_{j in I} [grad f_ij(x^{t+1}) - grad f_ij(x^t)]   otherwise,
                 the SAME minibatch I (B rows with replacement, from the worker's stream) at both points
             c_i^t = C(v_i^{t+1} - g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t

    p = 1 (or --batch-size full, where the differences telescope) is EF21 with exact gradients.  A quadratic problem is no finite sum: its sample
    is the noise draw, so the difference is exact.
    theory:  the paper's EF21-PAGE theorem and its step (which involve p, B and the
             smoothness of the f_ij) were not available where this was written, so no
             theorem's step is implemented: 'theory' uses EF21's step
             1/(L + L_tilde sqrt(beta/theta)), as the authors' experiments do (times a
             tuned factor); not a guarantee for p < 1.
    """

    name = "ef21-page"
    title = "EF21-PAGE, PAGE estimator of each finite sum (Fatkhullin et al. 2021)"
    paper = "Fatkhullin, Sokolov, Gorbunov, Li, Richtarik (2021), EF21 with bells & whistles"
    params = (PAGE_P, batch_params(1)[0])
    exact_sibling = "ef21"
    theory = "the theorem's step is not implemented: EF21's step is used (as the authors' experiments)"

    def theory_gamma(self, c, comp, hp):
        return ef21_gamma(c.L, c.L_tilde, comp.alpha)

    def worker_init(self, ctx, x):
        grad = ctx.grad(x)
        msg = ctx.dense(grad)
        return PageState(wire_copy(msg), grad.copy(), x.copy()), msg

    def worker_step(self, ctx, st, x):
        if ctx.common.random() < ctx.hp.page_p or ctx.hp.batch_size is None:
            st.v = ctx.grad(x)  # with --batch-size full the differences telescope to it
        else:
            sample = ctx.minibatch()
            st.v = st.v + (ctx.batch_grad(x, sample) - ctx.batch_grad(st.x, sample))
        st.x = x.copy()
        return st, ctx.ef21_update(st.v, st.g)

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
