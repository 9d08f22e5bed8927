from .base import Method, RESEND, register
from .gd import NoState
from .spars_ams import AMS_PARAMS, amsgrad_init, amsgrad_step


@register
class AMS(Method):
    """Compressed AMSGrad without error feedback, the baseline of the SPARS-AMS draft
    (full AMSGrad with --compressor identity):

    init:    m_0 = v_0 = v_hat_0 = 0
    worker:  send C(grad f_i(theta_t; xi))
    master:  as SPARS-AMS: AMSGrad on g_bar = (1/n) sum_i C(grad f_i(theta_t; xi))

    theory:  none: the learning rate gamma must be given (--gamma).
    """

    name = "ams"
    resync = RESEND
    title = "AMSGrad with compressed gradients, no error feedback (the SPARS-AMS draft's baseline)"
    paper = "SPARS-AMS draft (its baselines); Reddi, Kale, Kumar (2018), On the convergence of Adam and beyond"
    compressors = "any"
    params = AMS_PARAMS
    theory = "none: pass --gamma (the learning rate)"

    def worker_init(self, ctx, x):
        return NoState(), ctx.compress(ctx.sgrad(x))

    def worker_step(self, ctx, st, x):
        return st, ctx.compress(ctx.sgrad(x))

    master_init = staticmethod(amsgrad_init)
    master_step = staticmethod(amsgrad_step)
