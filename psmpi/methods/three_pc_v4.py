from .base import ef21_theta_beta, register
from .three_pc_v2 import CONTRACTIVE_COMP2, TwoStep


def v4_constants(alpha1: float, alpha2: float) -> tuple[float, float]:
    """(A, B) = (1 - sqrt(1 - abar), (1 - abar)/(1 - sqrt(1 - abar))),
    abar = 1 - (1 - alpha1)(1 - alpha2) (3PC paper, 3PCv4)."""
    return ef21_theta_beta(1.0 - (1.0 - alpha1) * (1.0 - alpha2))


@register
class ThreePCv4(TwoStep):
    """3PCv4 (Richtarik et al., "3PC: Three point compressors", ICML 2022): the 3PC
    method with C_{h,y}(x) = b + C1(x - b), b = h + C2(x - h), two EF21 steps in a row:

    init:    g_i^0 = grad f_i(x^0), sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i m_i^t
    worker:  q_i = C2(grad f_i(x^{t+1}) - g_i^t);  b_i = g_i^t + q_i
             c_i = C1(grad f_i(x^{t+1}) - b_i);  m_i^t = q_i + c_i (one message);  g_i^{t+1} = g_i^t + m_i^t

    C1 is --compressor, C2 --compressor2, both contractive (unbiased ones scaled by
    1/(omega+1)); two Top-K travel as one sparse message on the union of their supports.
    theory:  gamma = 1/(L + L_tilde sqrt(B/A)) (3PC theorem) with A = 1 - sqrt(1 - abar),
             B = (1 - abar)/(1 - sqrt(1 - abar)), abar = 1 - (1 - alpha1)(1 - alpha2).
    """

    name = "3pcv4"
    title = "3PCv4, two EF21 steps: b = h + C2(x - h), b + C1(x - b) (same paper)"
    compressor_note = "contractive C1, C2"
    paper = "Richtarik et al. (2022), 3PC: Three point compressors, ICML 2022"
    params = (CONTRACTIVE_COMP2,)
    theory = "1/(L + L~ sqrt(B/A)), 3PC with 3PCv4's A = 1 - sqrt(1-abar), B = (1-abar)/(1 - sqrt(1-abar))"

    def prepare_second(self, name, comp):
        return comp.as_contractive()

    def constants(self, comp, hp):
        return v4_constants(comp.alpha, hp.compressor2.alpha)

    def first(self, ctx, st, grad):
        return ctx.compress(grad - st.g, ctx.hp.compressor2)  # q_i = C2(grad f_i(x^{t+1}) - g_i^t)
