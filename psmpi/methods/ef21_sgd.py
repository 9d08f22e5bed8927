from .base import Method, ef21_gamma, batch_params, register, tracking_init, tracking_step, wire_copy
from .ef21 import GState


@register
class EF21SGD(Method):
    """EF21-SGD (Fatkhullin, Sokolov, Gorbunov, Li, Richtarik 2021, "EF21 with
    bells & whistles", Algorithm 2 with minibatch gradients):

    init:    g_i^0 = grad f_i(x^0; B_init), sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i c_i^t
    worker:  c_i^t = C(grad f_i(x^{t+1}; xi_i^t) - g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t

    With small batches it need not converge (Fatkhullin, Tyurin, Richtarik 2023).
    theory:  the step of the paper's EF21-SGD theorem depends on the constants of its
             gradient-noise assumption (E||grad f_xi||^2 <= 2A(f_i - f_i^inf) + B||grad f_i||^2 + C),
             which psmpi does not estimate, so it is not used: 'theory' uses EF21's
             step 1/(L + L_tilde sqrt(beta/theta)) instead, as the paper's experiments
             (tuned multiples of it) do.
    """

    name = "ef21-sgd"
    title = "EF21 with minibatch gradients (Fatkhullin et al. 2021)"
    paper = "Fatkhullin, Sokolov, Gorbunov, Li, Richtarik (2021), EF21 with bells & whistles"
    params = batch_params(1)
    exact_sibling = "ef21"

    theory = "the theorem's step needs the noise constants; EF21's step is used"

    def theory_gamma(self, c, comp, hp):
        return ef21_gamma(c.L, c.L_tilde, comp.alpha)

    def worker_init(self, ctx, x):
        msg = ctx.dense(ctx.init_grad(x))
        return GState(wire_copy(msg)), msg

    def worker_step(self, ctx, st, x):
        return st, ctx.ef21_update(ctx.sgrad(x), st.g)

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
