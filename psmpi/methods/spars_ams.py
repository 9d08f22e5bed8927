from dataclasses import dataclass

import numpy as np

from .base import Method, Param, RESEND, batch_params, mean_of, register

BETA1 = Param("beta1", "float", 0.9, "AMSGrad's first-moment decay beta1 (spars-ams, ams)", low=0.0, high=1.0,
              low_closed=True, symbol="β1")
BETA2 = Param("beta2", "float", 0.999, "AMSGrad's second-moment decay beta2 (spars-ams, ams)", low=0.0, high=1.0,
              low_closed=True, symbol="β2")
EPS = Param("eps", "float", 1e-8, "AMSGrad's epsilon in sqrt(v_hat + eps) (spars-ams, ams)", low=0.0, symbol="ε")
AMS_PARAMS = (BETA1, BETA2, EPS, *batch_params(1))


@dataclass
class ErrorState:
    e: np.ndarray  # e_{t,i}, the compression error carried to the next round


@dataclass
class MasterAMS:
    x: np.ndarray  # theta_t
    m: np.ndarray
    v: np.ndarray
    v_hat: np.ndarray


def amsgrad_init(hp, x0, payloads) -> MasterAMS:
    """m_0 = v_0 = v_hat_0 = 0, then the first step."""
    z = np.zeros_like(x0)
    return amsgrad_step(hp, MasterAMS(x0.copy(), z, z.copy(), z.copy()), payloads)


def amsgrad_step(hp, ms: MasterAMS, payloads) -> MasterAMS:
    """g_bar = mean_i g~_i;  m = beta1 m + (1 - beta1) g_bar;  v = beta2 v + (1 - beta2) g_bar^2;
    v_hat = max(v, v_hat);  theta -= gamma m / sqrt(v_hat + eps)."""
    g = mean_of(payloads, ms.x.shape[0])
    ms.m *= hp.beta1
    ms.m += (1.0 - hp.beta1) * g
    ms.v *= hp.beta2
    ms.v += (1.0 - hp.beta2) * (g * g)
    np.maximum(ms.v, ms.v_hat, out=ms.v_hat)
    ms.x -= hp.gamma * ms.m / np.sqrt(ms.v_hat + hp.eps)
    return ms


@register
class SparsAMS(Method):
    """SPARS-AMS: Top-K with error feedback on the workers, AMSGrad on the server
    (the SPARS-AMS draft, Algorithm 1):

    init:    e_{0,i} = 0;  m_0 = v_0 = v_hat_0 = 0;  every round is compressed (no dense first round)
    worker:  g_{t,i} = grad f_i(theta_t; xi);  g~_{t,i} = C(g_{t,i} + e_{t,i});  e_{t+1,i} = e_{t,i} + g_{t,i} - g~_{t,i};
             send g~_{t,i}
    master:  g_bar = (1/n) sum_i g~_{t,i};  m = beta1 m + (1 - beta1) g_bar;  v = beta2 v + (1 - beta2) g_bar^2;
             v_hat = max(v, v_hat);  theta_{t+1} = theta_t - gamma m / sqrt(v_hat + eps)

    C is Top-K in the draft; any contractive compressor is accepted.  With
    --compressor identity e stays 0 and this is full AMSGrad; the draft's other
    baseline, Top-K AMSGrad without error feedback, is the method `ams`.
    theory:  none: the learning rate gamma must be given (--gamma).
    """

    name = "spars-ams"
    resync = RESEND
    title = "SPARS-AMS: Top-K with error feedback, AMSGrad on the server (SPARS-AMS draft)"
    paper = "SPARS-AMS draft: sparsified AMSGrad with error feedback (Algorithm 1)"
    params = AMS_PARAMS
    theory = "none: pass --gamma (the learning rate)"

    def worker_init(self, ctx, x):
        return self.worker_step(ctx, ErrorState(np.zeros_like(x, dtype=np.float64)), x)

    def worker_step(self, ctx, st, x):
        st.e += ctx.sgrad(x)  # g + e
        c = ctx.compress(st.e)
        c.add_to(st.e, -1.0)  # e + g - C(g + e)
        return st, c

    master_init = staticmethod(amsgrad_init)
    master_step = staticmethod(amsgrad_step)
