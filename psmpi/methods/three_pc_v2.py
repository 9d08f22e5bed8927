from dataclasses import replace

from ..errors import MethodError
from .base import Param, ThreePC, register, summed, tracking_init, tracking_step
from .clag import lazy_init

COMP2 = Param("compressor2", "compressor", "randk:1", "the second compressor of the 3PC variants: 3pcv2's "
              "unbiased Q, 3pcv3's C1 of the inner CLAG step, 3pcv4's C2 of the first EF21 step",
              in_theory=True, symbol="C2")
CONTRACTIVE_COMP2 = replace(COMP2, default="topk:1")  # 3pcv3 and 3pcv4: a contractive second compressor


def v2_constants(alpha: float, omega: float) -> tuple[float, float]:
    """(A, B) = (alpha, (1 - alpha) omega) of 3PCv2 (3PC paper)."""
    return alpha, (1.0 - alpha) * omega


class TwoStep(ThreePC):
    """3PCv2-v4: g_i^{t+1} = b_i + C(grad f_i(x^{t+1}) - b_i), b_i = g_i^t + q_i, where the
    method's ``first`` step gives the message q_i (None: q_i = 0)."""

    def first(self, ctx, st, grad):
        raise NotImplementedError

    worker_init = staticmethod(lazy_init)  # g_i^0 = grad f_i(x^0), sent dense; the last gradient kept

    def worker_step(self, ctx, st, x):
        """q_i = first(...);  b_i = g_i^t + q_i;  c_i = C(grad - b_i);  send q_i + c_i as one
        message (base.summed), which g_i adds as the master does."""
        grad = ctx.grad(x)
        q = self.first(ctx, st, grad)
        b = st.g.copy()
        if q is not None:
            q.add_to(b)
        msg = summed(q, ctx.compress(grad - b), ctx.value_dtype)
        msg.add_to(st.g)
        st.h = grad.copy()
        return st, msg

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)


@register
class ThreePCv2(TwoStep):
    """3PCv2 (Richtarik et al., "3PC: Three point compressors", ICML 2022): the 3PC
    method with C_{h,y}(x) = b + C(x - b), b = h + Q(x - y), Q unbiased:

    init:    g_i^0 = grad f_i(x^0), sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i m_i^t
    worker:  q_i = Q(grad f_i(x^{t+1}) - grad f_i(x^t));  b_i = g_i^t + q_i
             c_i = C(grad f_i(x^{t+1}) - b_i);  m_i^t = q_i + c_i;  g_i^{t+1} = g_i^t + m_i^t

    --compressor is the contractive C (alpha; an unbiased one is scaled by 1/(omega+1)),
    --compressor2 the unbiased Q (omega; a biased Q is refused).  q_i and c_i travel as
    one message: on the union of their supports when both are sparse (Rand-K and Top-K),
    else as d dense values.
    theory:  gamma = 1/(L + L_tilde sqrt(B/A)) (3PC theorem) with A = alpha,
             B = (1 - alpha) omega.
    """

    name = "3pcv2"
    title = "3PCv2, b = h + Q(x - y), b + C(x - b) (same paper)"
    compressor_note = "contractive C; --compressor2 unbiased Q"
    paper = "Richtarik et al. (2022), 3PC: Three point compressors, ICML 2022"
    params = (COMP2,)
    theory = "1/(L + L~ sqrt(B/A)), 3PC with 3PCv2's A = alpha, B = (1 - alpha) omega_Q"

    def prepare_second(self, name, comp):
        if not comp.unbiased:
            raise MethodError(f"method '{self.name}' needs an unbiased Q (randk, natural, qsgd, "
                              f"identity); '{comp.spec}' is biased")
        return comp

    def constants(self, comp, hp):
        return v2_constants(comp.alpha, hp.compressor2.omega)

    def first(self, ctx, st, grad):
        return ctx.compress(grad - st.h, ctx.hp.compressor2)  # q_i = Q(grad f_i(x^{t+1}) - grad f_i(x^t))
