from .base import register
from .clag import ZETA, clag_constants, fires
from .three_pc_v2 import CONTRACTIVE_COMP2, TwoStep


def v3_constants(alpha: float, alpha1: float, zeta: float) -> tuple[float, float]:
    """(A, B) of 3PCv3 with CLAG (compressor C1, trigger zeta) as the inner 3PC.

    The 3PC paper: A = 1 - (1 - alpha)(1 - A1), B = (1 - alpha) B1.  CLAG's (A1, B1) hold
    for every s > 0: A1 = 1 - (1 - alpha1)(1 + s), B1 = max{(1 - alpha1)(1 + 1/s), zeta},
    so with q = (1 - alpha)(1 - alpha1): A = 1 - q(1 + s), B = max{q(1 + 1/s), (1 - alpha) zeta},
    which is CLAG's pair for alpha_bar = 1 - q and trigger (1 - alpha) zeta: the s that
    minimises B/A is clag_constants'.
    """
    return clag_constants(1.0 - (1.0 - alpha) * (1.0 - alpha1), (1.0 - alpha) * zeta)


@register
class ThreePCv3(TwoStep):
    """3PCv3 (Richtarik et al., "3PC: Three point compressors", ICML 2022): the 3PC
    method with C_{h,y}(x) = b + C(x - b), b = C1_{h,y}(x) another 3PC; here C1 is CLAG's
    (compressor C1 = --compressor2, trigger --zeta), our choice of inner 3PC:

    init:    g_i^0 = grad f_i(x^0), sent dense;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i m_i^t
    worker:  if ||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2:
                 q_i = C1(grad f_i(x^{t+1}) - g_i^t), else q_i = 0 (nothing)
             b_i = g_i^t + q_i;  c_i = C(grad f_i(x^{t+1}) - b_i)
             m_i^t = q_i + c_i (one message);  g_i^{t+1} = g_i^t + m_i^t

    Both compressors are contractive (unbiased ones scaled by 1/(omega+1)).  zeta = 0 is
    3PCv4 (the inner step always fires: EF21's 3PC); a trigger that never fires is EF21
    with C; C1 = identity makes the inner step LAG's.
    theory:  gamma = 1/(L + L_tilde sqrt(B/A)) (3PC theorem) with the paper's
             A = 1 - (1 - alpha)(1 - A1), B = (1 - alpha) B1 and CLAG's A1(s), B1(s) at the
             s > 0 minimising B/A (v3_constants).
    """

    name = "3pcv3"
    title = "3PCv3, b = CLAG's 3PC, b + C(x - b) (same paper; inner 3PC our choice)"
    compressor_note = "contractive C, C1"
    paper = "Richtarik et al. (2022), 3PC: Three point compressors, ICML 2022"
    params = (CONTRACTIVE_COMP2, ZETA)
    theory = "1/(L + L~ sqrt(B/A)), 3PC with 3PCv3's A = 1-(1-alpha)(1-A1), B = (1-alpha) B1, CLAG inner"

    def prepare_second(self, name, comp):
        return comp.as_contractive()

    def constants(self, comp, hp):
        return v3_constants(comp.alpha, hp.compressor2.alpha, hp.zeta)

    def first(self, ctx, st, grad):
        """CLAG's step with C1: q_i = C1(grad - g_i^t) if the trigger fires, else nothing."""
        diff = grad - st.g
        if fires(ctx, diff, grad, st.h):
            return ctx.compress(diff, ctx.hp.compressor2)
        return None
