import math
from dataclasses import dataclass, replace

import numpy as np

from .base import MasterG, Method, MethodError, mean_of, register, summed
from .ef21_pp import PARTICIPATION
from .marina import P


@dataclass
class PPState:
    h: np.ndarray  # grad f_i at the iterate of round h_round (the last gradient this worker computed)
    x: np.ndarray  # x^{t-1}, the previous round's iterate (where a stale h must be recomputed)
    h_round: int


def pp_master_step(hp, ms: MasterG, payloads) -> MasterG:
    """A synchronisation round (flag set, every worker's grad f_i dense): g = their mean;
    else g += (1/r) sum of the sampled workers' messages (a worker drawn m times sent the
    sum of its m compressions).  Then x -= gamma g."""
    sent = [p for p in payloads if p is not None]
    flags = {p.flag for p in sent}
    if len(flags) != 1:
        raise ValueError("the workers disagree on the synchronisation coin")
    if flags.pop():
        if len(sent) != len(payloads):
            raise ValueError("a synchronisation round without every worker's gradient")
        ms.g = mean_of(payloads, ms.x.shape[0])
    else:
        ms.g += mean_of(payloads, ms.x.shape[0], count=hp.participation)
    ms.x -= hp.gamma * ms.g
    return ms


@register
class PPMARINA(Method):
    """PP-MARINA, MARINA with partial participation (Gorbunov, Burlachenko, Li, Richtarik,
    "MARINA: Faster non-convex distributed learning with compression", ICML 2021,
    Algorithm PP-MARINA):

    init:    g^0 = grad f(x^0): every worker sends grad f_i(x^0) dense
    master:  x^{t+1} = x^t - gamma g^t;  one coin c_t ~ Bernoulli(p) shared by all;
             c_t = 1: g^{t+1} = (1/n) sum_i grad f_i(x^{t+1})  (every worker)
             c_t = 0: I_t = r i.i.d. uniform draws from the n workers (with replacement);
                      g^{t+1} = g^t + (1/r) sum_{i in I_t} Q(grad f_i(x^{t+1}) - grad f_i(x^t))
    worker:  sends grad f_i(x^{t+1}) dense (flag set) on a synchronisation round; drawn m >= 1
             times, sends the sum of m independent compressions Q(grad f_i(x^{t+1}) - grad f_i(x^t))
             as one message; not drawn: computes nothing and sends nothing (0 bytes, counted so)

    r is --participation (a number of workers; the paper's r, which may exceed n since
    the draws are with replacement; a probability is refused: the theorem samples r).
    The coin and I_t come from a stream every worker holds a copy of, so all agree on
    them without a message.  A drawn worker whose last gradient is not from the previous
    round recomputes grad f_i(x^t) at the previous iterate, which it keeps (every worker
    rank receives x every round, in the one MPI broadcast, and bytes_down counts x for all
    n).  Q must be unbiased (omega).
    theory:  gamma = 1/(L_tilde (1 + sqrt((1 - p)(1 + omega)/(p r)))), MARINA Theorem 4.1
             (arXiv 2102.07845, p. 37): r the sampled clients, p the synchronisation
             probability, 1 + omega (not omega).  L_tilde = sqrt((1/n) sum L_i^2), MARINA's
             one constant for both terms (>= f's L), as on the compression term of
             marina.py's Theorem 2.1; the 3PC refinement marina.py uses (f's L in the first
             term) was not found for PP-MARINA, so the theorem's single constant stays.
             Checked against the co-author Burlachenko's FL_PyTorch (MarinaAlgorithmPP.
             theoreticalStepSize, commented "Theorem 4.1, p.37"): this formula with r the
             clients per round, and sqrt(mean L_i^2) for L (left there as a comment beside
             a max_i L_i marked "Maybe hack"); the paper's own text could not be read here.
             The default p is MARINA's 1/(omega + 1); for Rand-K the paper's corollary
             picks p ~ r/(n (omega + 1)) (pass it with --p).
    """

    name = "pp-marina"
    title = "PP-MARINA, MARINA with partial participation (Gorbunov et al. 2021)"
    paper = "Gorbunov, Burlachenko, Li, Richtarik (2021), MARINA, ICML 2021"
    compressors = "unbiased"
    independent_compressors = True  # Theorem 4.1's omega/(p r): the compressors drawn independently
    params = (P, replace(PARTICIPATION, default=5))
    theory = "1/(L~ (1 + sqrt((1-p)(1+omega)/(p r)))), MARINA Theorem 4.1 (PP-MARINA), r = --participation"

    def default(self, name, comp):
        return 1.0 / (comp.omega + 1.0) if name == "p" else super().default(name, comp)

    def check(self, hp):
        if not isinstance(hp.participation, int):
            raise MethodError(f"method '{self.name}' samples r workers a round (its theorem's r draws): give "
                              f"--participation as a number of workers, not a probability (got {hp.participation})")

    def theory_gamma(self, c, comp, hp):
        return 1.0 / (c.L_tilde * (1.0 + math.sqrt((1.0 - hp.p) * (1.0 + comp.omega) / (hp.p * hp.participation))))

    def worker_init(self, ctx, x):
        grad = ctx.grad(x)
        return PPState(grad.copy(), x.copy(), 0), ctx.dense(grad, flag=True)

    def worker_step(self, ctx, st, x):
        hp, t = ctx.hp, ctx.round
        if ctx.common.random() < hp.p:  # synchronisation: everyone, dense
            grad = ctx.grad(x)
            msg = ctx.dense(grad, flag=True)
        else:
            drawn = int(np.count_nonzero(ctx.common.integers(0, hp.n, size=hp.participation) == ctx.index))
            if not drawn:
                st.x = x.copy()
                return st, None
            grad = ctx.grad(x)
            diff = grad - (st.h if st.h_round == t - 1 else ctx.grad_at(st.x))
            msg = ctx.compress(diff)
            for _ in range(drawn - 1):
                msg = summed(msg, ctx.compress(diff), ctx.value_dtype)
        st.h, st.x, st.h_round = grad.copy(), x.copy(), t
        return st, msg

    def master_init(self, hp, x0, payloads):
        return pp_master_step(hp, MasterG(x0.copy(), np.zeros_like(x0)), payloads)

    master_step = staticmethod(pp_master_step)
