import math
from dataclasses import dataclass

import numpy as np

from ..compressors import Empty
from .base import Method, apply, ef21_theta_beta, register


@dataclass
class LagState:
    g: np.ndarray  # g_i^t
    h: np.ndarray  # grad f_i(x^t), the last gradient


@register
class CLAG(Method):
    """CLAG, compressed lazy aggregation (Richtarik, Sokolov, Fatkhullin,
    Gasanov, Li, Gorbunov 2022, "3PC: Three point compressors for
    communication-efficient distributed training"):

    g_i^{t+1} = g_i^t + C(grad f_i(x^{t+1}) - g_i^t)
        if ||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2,
    g_i^{t+1} = g_i^t otherwise (an empty message);
    x^{t+1} = x^t - gamma g^t,  g^{t+1} = g^t + (1/n) sum_i c_i^t.

    Step 'theory': 1/(L + Lt sqrt(B/A)) with A = theta, B = max(beta, zeta)
    (EF21's theta, beta for the compressor's alpha).
    """

    name = "clag"
    paper = "Richtarik et al. (2022), 3PC: Three point compressors, ICML 2022"

    def theory_gamma(self, L, Lt, comp, hp):
        theta, beta = ef21_theta_beta(comp.alpha)
        if theta <= 0:
            raise ValueError("compressor alpha must be positive")
        return 1.0 / (L + Lt * math.sqrt(max(beta, hp.zeta) / theta))

    def worker_init(self, ctx, x):
        grad = ctx.grad(x)
        msg = ctx.dense(grad)
        return LagState(msg.values.astype(np.float64), grad.copy()), msg

    def worker_step(self, ctx, st, x):
        grad = ctx.grad(x)
        diff = grad - st.g
        if diff @ diff > ctx.hp.zeta * float(np.sum((grad - st.h) ** 2)):
            c = ctx.compress(diff)
            apply(c, st.g)
        else:
            c = Empty(x.shape[0])
        st.h = grad.copy()
        return st, c


@register
class LAG(CLAG):
    """LAG, lazy aggregation (Chen, Giannakis, Sun, Yin 2018) in the 3PC form
    (Richtarik et al. 2022): CLAG with the identity compressor,

    g_i^{t+1} = grad f_i(x^{t+1}) if ||grad f_i(x^{t+1}) - g_i^t||^2 > zeta ||grad f_i(x^{t+1}) - grad f_i(x^t)||^2
    else g_i^t;  x^{t+1} = x^t - gamma g^t.

    Step 'theory': 1/(L + Lt sqrt(zeta)) (A = 1, B = zeta).
    """

    name = "lag"
    paper = "Chen, Giannakis, Sun, Yin (2018), LAG: Lazily aggregated gradient; 3PC (2022)"
    compressors = "identity"
