import math
from dataclasses import dataclass

import numpy as np

from ..compressors import Empty
from .base import Param, ThreePC, register, tracking_init, tracking_step, wire_copy

ZETA = Param("zeta", "float", 1.0, "trigger zeta of LAG/CLAG: a worker sends when "
             "||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2", low=0.0,
             low_closed=True, in_theory=True, symbol="ζ")


def clag_constants(alpha: float, zeta: float) -> tuple[float, float]:
    """(A, B) of CLAG's three-point compressor at the s > 0 minimising B/A, where
    A(s) = 1 - (1 - alpha)(1 + s), B(s) = max{(1 - alpha)(1 + 1/s), zeta} (3PC paper).

    (1 - alpha)(1 + 1/s)/A(s) alone is smallest at EF21's s* = 1/sqrt(1 - alpha) - 1;
    above s_zeta = (1 - alpha)/(zeta - (1 - alpha)) the maximum is zeta, and zeta/A(s)
    grows with s; so the best s is min(s*, s_zeta).
    """
    if alpha >= 1.0:
        return 1.0, zeta  # C is the identity: LAG's (A, B) = (1, zeta)
    q = 1.0 - alpha
    s = 1.0 / math.sqrt(q) - 1.0
    if zeta > q:
        s = min(s, q / (zeta - q))
    return 1.0 - q * (1.0 + s), max(q * (1.0 + 1.0 / s), zeta)


@dataclass
class LagState:
    g: np.ndarray  # g_i^t
    h: np.ndarray  # grad f_i(x^t), the last gradient


def lazy_init(ctx, x):
    """g_i^0 = grad f_i(x^0), sent dense."""
    grad = ctx.grad(x)
    msg = ctx.dense(grad)
    return LagState(wire_copy(msg), grad.copy()), msg


def fires(ctx, diff, grad, h) -> bool:
    """LAG's trigger: ||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2,
    with ``diff`` = grad f_i(x^{t+1}) - g_i^t and ``h`` = grad f_i(x^t)."""
    return diff @ diff > ctx.hp.zeta * float(np.sum((grad - h) ** 2))


def lazy_update(ctx, st: LagState, x):
    """The CLAG rule: compress the change only when the trigger fires, else send nothing."""
    grad = ctx.grad(x)
    diff = grad - st.g
    if fires(ctx, diff, grad, st.h):
        c = ctx.compress(diff)
        c.add_to(st.g)
    else:
        c = Empty(x.shape[0])
    st.h = grad.copy()
    return st, c


@register
class CLAG(ThreePC):
    """CLAG, compressed lazy aggregation (Richtarik, Sokolov, Fatkhullin, Gasanov,
    Li, Gorbunov, "3PC: Three point compressors for communication-efficient
    distributed training and a better theory for lazy aggregation", ICML 2022):

    init:    g_i^0 = grad f_i(x^0), sent dense
    master:  x^{t+1} = x^t - gamma g^t;  g^{t+1} = g^t + (1/n) sum_i c_i^t
    worker:  c_i^t = C(grad f_i(x^{t+1}) - g_i^t)
                 if ||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2,
             c_i^t = 0 otherwise (an empty message);  g_i^{t+1} = g_i^t + c_i^t

    theory:  gamma = 1/(L + L_tilde sqrt(B/A)) (3PC paper, its theorem for three-point
             compressors, with L and L_tilde in the places of its L_- <= L and
             L_+ <= L_tilde) with CLAG's constants A = 1 - (1 - alpha)(1 + s),
             B = max{(1 - alpha)(1 + 1/s), zeta}, at the s > 0 that minimises B/A
             (clag_constants).
    """

    name = "clag"
    title = "compressed lazy aggregation, 3PC (Richtarik et al. 2022)"
    paper = "Richtarik et al. (2022), 3PC: Three point compressors, ICML 2022"
    params = (ZETA,)

    theory = "1/(L + L~ sqrt(B/A)), 3PC with CLAG's A(s), B(s) at the best s"

    def constants(self, comp, hp):
        return clag_constants(comp.alpha, hp.zeta)

    worker_init = staticmethod(lazy_init)
    worker_step = staticmethod(lazy_update)
    master_init = staticmethod(tracking_init)
    master_step = staticmethod(tracking_step)
