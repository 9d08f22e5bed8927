import math

import numpy as np

from .base import Method, MethodError, Param, register, tracking_init, tracking_step, wire_copy
from .ef21 import GState

PARTICIPATION = Param("participation", "participation", 0.5,
                      "who works each round: each worker independently with probability p (0.5), or K workers "
                      "drawn uniformly (5: K distinct ones for ef21-pp; pp-marina takes only K, as K independent "
                      "draws, its theorem's r); the draw comes from a stream every participant holds a copy of",
                      in_theory=True, symbol="p")


def participates(ctx) -> bool:
    """This round's draw, made identically by every worker from its copy of the shared
    stream (so all agree on S_t without a message), then this worker's part in it."""
    n, part = ctx.hp.n, ctx.hp.participation
    if isinstance(part, int):
        chosen = ctx.common.choice(n, size=part, replace=False)
        return bool(np.any(chosen == ctx.index))
    return bool(ctx.common.random(n)[ctx.index] < part)


def pp_constants(alpha: float, p: float) -> float:
    """min over s, rho > 0 of B/theta_p (EF21-PP, B&W Theorem 7 with every p_i = p):
    theta = 1 - (1 - alpha)(1 + s), beta = (1 - alpha)(1 + 1/s),
    theta_p = p theta - rho (1 - p) > 0, B = beta p + (1 + 1/rho)(1 - p).

    With a = beta p + (1 - p), c = p theta and e = 1 - p the ratio is
    (a + e/rho)/(c - e rho), smallest at rho = (sqrt(e^2 + a c) - e)/a (its derivative's
    root, where c - e rho > 0); the minimum over s is taken on a fine grid."""
    q = 1.0 - alpha
    s_max = 1.0 / q - 1.0 if q > 0 else 1e6
    s = np.geomspace(s_max * 1e-6, s_max * (1 - 1e-9), 20001)
    theta, beta = 1.0 - q * (1.0 + s), q * (1.0 + 1.0 / s)
    e = 1.0 - p
    if e <= 0.0:
        return float(np.min(beta / theta))
    a, c = beta * p + e, p * theta
    rho = (np.sqrt(e * e + a * c) - e) / a
    return float(np.min((a + e / rho) / (c - e * rho)))


@register
class EF21PP(Method):
    """EF21-PP, partial participation (Fatkhullin, Sokolov, Gorbunov, Li, Richtarik 2021,
    "EF21 with bells & whistles", Algorithm EF21-PP):

    init:    g_i^0 = grad f_i(x^0), sent dense by every worker;  g^0 = (1/n) sum_i g_i^0
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_{i in S_t} c_i^t
    worker:  S_t drawn (each worker with probability p, or K uniformly); i in S_t:
             c_i^t = C(grad f_i(x^{t+1}) - g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t;
             i not in S_t: no gradient, no message, g_i unchanged

    Non-participants send nothing (0 bytes, counted so).  x still reaches every
    worker rank in the round's one MPI broadcast, and bytes_down counts it for all n.
    theory:  gamma = 1/(L + L_tilde sqrt(B/theta_p)) minimised over s, rho > 0 (pp_constants),
             the paper's Theorem 7 with p_i = p for all i (for K of n workers, the marginal
             p = K/n); the theorem was read through the authors' experiment code, which
             states it for equal p_i, as here.
    """

    name = "ef21-pp"
    title = "EF21 with partial participation (Fatkhullin et al. 2021)"
    paper = "Fatkhullin, Sokolov, Gorbunov, Li, Richtarik (2021), EF21 with bells & whistles"
    params = (PARTICIPATION,)
    theory = "1/(L + L~ sqrt(B/theta_p)) at the best s, rho, B&W Theorem 7 (p_i = p or K/n)"

    def check(self, hp):
        if isinstance(hp.participation, int) and hp.participation > hp.n:
            raise MethodError(f"--participation {hp.participation} is more than the {hp.n} workers")

    def theory_gamma(self, c, comp, hp):
        part = hp.participation
        p = part / hp.n if isinstance(part, int) else part
        return 1.0 / (c.L + c.L_tilde * math.sqrt(pp_constants(comp.alpha, p)))

    def worker_init(self, ctx, x):
        msg = ctx.dense(ctx.grad(x))
        return GState(wire_copy(msg)), msg

    def worker_step(self, ctx, st, x):
        if not participates(ctx):
            return st, None
        return st, ctx.ef21_update(ctx.grad(x), st.g)

    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
