from dataclasses import dataclass

import numpy as np

from .base import Method, register


@dataclass
class GState:
    g: np.ndarray  # g_i^t, equal to what the master has accumulated for this worker


@register
class EF21(Method):
    """EF21 (Richtarik, Sokolov, Fatkhullin 2021, "EF21: A new, simpler,
    theoretically better, and practically faster error feedback"):

    g_i^0 = grad f_i(x^0),  x^{t+1} = x^t - gamma g^t,
    c_i^t = C(grad f_i(x^{t+1}) - g_i^t),  g_i^{t+1} = g_i^t + c_i^t,
    g^{t+1} = g^t + (1/n) sum_i c_i^t.

    Step 'theory': gamma = 1/(L + Lt sqrt(beta/theta)) with
    theta = 1 - sqrt(1 - alpha), beta = (1 - alpha)/(1 - sqrt(1 - alpha)).
    """

    name = "ef21"
    paper = "Richtarik, Sokolov, Fatkhullin (2021), EF21, NeurIPS 2021"

    def estimate(self, ctx, st, x):
        """The vector g_i tracks (exact gradient for EF21)."""
        return ctx.grad(x)

    def init_estimate(self, ctx, x):
        return ctx.grad(x)

    def worker_init(self, ctx, x):
        msg = ctx.dense(self.init_estimate(ctx, x))
        return GState(msg.values.astype(np.float64)), msg

    def worker_step(self, ctx, st, x):
        return st, ctx.ef_update(self.estimate(ctx, st, x), st.g)
