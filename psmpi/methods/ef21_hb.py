from dataclasses import dataclass

import numpy as np

from ..errors import MethodError
from .base import Method, Param, RETRACK, ef21_gamma, mean_of, register, send_g
from .ef21 import EF21

HB_ETA = Param("hb_eta", "float", 0.9, "heavy-ball momentum eta of EF21-HB, v^{t+1} = eta v^t + g^{t+1}, below 1", low=0.0,
               high=1.0, low_closed=True, symbol="η")


@dataclass
class MasterHB:
    """The iterate x, the estimate g and the heavy-ball direction v."""

    x: np.ndarray
    g: np.ndarray
    v: np.ndarray


@register
class EF21HB(Method):
    """EF21-HB (Fatkhullin, Sokolov, Gorbunov, Li, Richtarik 2021, "EF21 with bells &
    whistles", heavy-ball momentum on the master; the update as in the authors' code):

    init:    g_i^0 = grad f_i(x^0), sent dense;  g^0 = (1/n) sum_i g_i^0;  v^0 = g^0
    master:  x^{t+1} = x^t - gamma v^t;  g^{t+1} = g^t + (1/n) sum_i c_i^t;  v^{t+1} = eta v^t + g^{t+1}
    worker:  c_i^t = C(grad f_i(x^{t+1}) - g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t  (EF21's)

    eta = 0 is EF21.  eta must be below 1 (--hb-eta in [0, 1)).
    theory:  the paper's EF21-HB theorem and its step were not available where this was
             written, so no theorem's step is implemented.  'theory' uses EF21's step times
             (1 - eta), which keeps the heavy ball's effective step gamma/(1 - eta) at EF21's
             (a heuristic, not a guarantee).  The authors' experiments run EF21's step times
             a tuned factor (--gamma-factor 1/(1 - eta) gives EF21's step itself).
    """

    name = "ef21-hb"
    resync = RETRACK + " (the momentum v is kept)"
    worker_resync = staticmethod(send_g)
    title = "EF21-HB, heavy-ball momentum on the master (Fatkhullin et al. 2021)"
    paper = "Fatkhullin, Sokolov, Gorbunov, Li, Richtarik (2021), EF21 with bells & whistles"
    params = (HB_ETA,)
    theory = "the theorem's step is not implemented: EF21's step times (1 - eta) (heuristic)"

    def check(self, hp):
        if hp.hb_eta >= 1.0:
            raise MethodError(f"method '{self.name}': --hb-eta must be below 1 (got {hp.hb_eta:g}); "
                              f"eta = 1 never forgets a direction")

    def theory_gamma(self, c, comp, hp):
        return ef21_gamma(c.L, c.L_tilde, comp.alpha) * (1.0 - hp.hb_eta)

    worker_init = EF21.worker_init
    worker_step = EF21.worker_step

    def master_init(self, hp, x0, payloads):
        g = mean_of(payloads, x0.shape[0])
        v = g.copy()
        return MasterHB(x0 - hp.gamma * v, g, v)

    def master_resync(self, hp, ms, x, payloads, t):
        if t == 0:
            return self.master_init(hp, x, payloads)
        ms.g[:] = 0.0
        return self.master_step(hp, ms, payloads)  # g = the mean of the survivors' g_i, v and x as usual

    def master_step(self, hp, ms, payloads):
        ms.g += mean_of(payloads, ms.x.shape[0])
        ms.v *= hp.hb_eta
        ms.v += ms.g
        ms.x -= hp.gamma * ms.v
        return ms
