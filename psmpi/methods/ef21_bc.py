from dataclasses import dataclass

import numpy as np

from ..compressors import Dense
from .base import Method, Param, master_rng, mean_of, register, wire_copy

DOWNLINK = Param("downlink_compressor", "compressor", None,
                 "the master's compressor C_M of EF21-BC's broadcast b = C_M(mean g_i - g) (contractive; an "
                 "unbiased one is scaled by 1/(omega+1)) [default: topk with the K of --compressor when it keeps a "
                 "fixed K (topk:K, randk:K), else the --compressor spec itself]",
                 in_theory=True, symbol="C_M")


@dataclass
class BCWorker:
    g: np.ndarray  # g~_i^t, this worker's EF21 estimate (what the master has accumulated for it)
    w: np.ndarray  # w^t, this worker's copy of the model: x^t bit for bit
    gb: np.ndarray  # g^t, the broadcast estimate, as the master holds it


@dataclass
class BCMaster:
    x: np.ndarray  # x^t
    gt: np.ndarray  # g~^t = (1/n) sum_i g~_i^t
    g: np.ndarray  # g^t, the estimate the workers hold too
    t: int  # rounds aggregated (the master's stream of round t: master_rng(seed, t))


@register
class EF21BC(Method):
    """EF21-BC, bidirectional compression (Fatkhullin, Sokolov, Gorbunov, Li, Richtarik 2021,
    "EF21 with bells & whistles", Algorithm EF21-BC):

    init:    g~_i^0 = grad f_i(x^0), sent dense;  g^0 = g~^0 = (1/n) sum_i g~_i^0, broadcast dense
    master:  x^{t+1} = x^t - gamma g^t;  g~^{t+1} = g~^t + (1/n) sum_i c_i^t;
             b^{t+1} = C_M(g~^{t+1} - g^t);  g^{t+1} = g^t + b^{t+1};  broadcast b^{t+1}
    worker:  w^{t+1} = w^t - gamma g^t, its own copy of x^{t+1} (equal bit for bit);
             c_i^t = C_w(grad f_i(w^{t+1}) - g~_i^t);  g~_i^{t+1} = g~_i^t + c_i^t;  send c_i^t;
             on receiving b^{t+1}: g^{t+1} = g^t + b^{t+1}  (and then the next w step)

    C_w is --compressor, C_M --downlink-compressor, both contractive (an unbiased one
    scaled by 1/(omega+1)); a random C_M draws from the master's own stream of the round,
    derived from (seed, t).  The workers never receive x after round 0: each keeps its
    model w and moves it with the broadcast estimate.  What goes down: x^0 (dense
    float64, round 0), g^0 (dense, at the wire precision, opening round 1), then b^t
    encoded as every message is (Top-K: indices and values); bytes_down counts these for
    the n workers.  On evaluation rounds x^t also goes down, uncounted (the evaluation's
    traffic); f and ||grad f||^2 are measured at the master's x^t, which equals every w^t.
    theory:  B&W prove an O(L~ delta0/(alpha_w alpha_M eps^2)) rate for EF21-BC (Corollary 1;
             the step is in the appendix theorem, Appendix G as the main text refers to it).
             That theorem's text could not be found and read where this was written (the
             main text, Table 1 and the poster give only the rate), so no theoretical step
             is implemented: pass --gamma.  The authors' experiment code for EF21-BC
             (IgorSokoloff/ef21_b-w_experiements_source_code, Logistic regression/ef21_bc.py)
             runs EF21's Theorem 1 step for the workers' Top-k alone, 1/(L + L~ sqrt(beta/
             theta)) with alpha = k_w/d, times a tuned factor: so do the configs here.
    """

    name = "ef21-bc"
    title = "EF21-BC, bidirectional compression: the master's broadcast compressed by EF21 (Fatkhullin et al. 2021)"
    compressor_note = "contractive C_w; --downlink-compressor contractive C_M"
    paper = "Fatkhullin, Sokolov, Gorbunov, Li, Richtarik (2021), EF21 with bells & whistles"
    params = (DOWNLINK,)
    downlink = True
    theory = ("none implemented (the B&W theorem's step was not checked): pass --gamma, e.g. EF21's step "
              "times a factor as the paper's experiments do")

    def default(self, name, comp):
        if name != "downlink_compressor":
            return super().default(name, comp)
        k = getattr(comp, "k", None)
        return f"topk:{k}" if k else comp.spec

    def prepare_second(self, name, comp):
        return comp.as_contractive()

    # workers -----------------------------------------------------------------
    def worker_init(self, ctx, x):
        msg = ctx.dense(ctx.grad(x))
        return BCWorker(wire_copy(msg), x.copy(), np.zeros_like(x)), msg

    def worker_step(self, ctx, st, x):
        return st, ctx.ef21_update(ctx.grad(x), st.g)  # x is w^t (worker_model)

    def worker_receive(self, ctx, st, b):
        b.add_to(st.gb)
        st.w -= ctx.hp.gamma * st.gb
        return st

    def worker_model(self, st):
        return st.w

    # master ------------------------------------------------------------------
    def master_init(self, hp, x0, payloads):
        gt = mean_of(payloads, x0.shape[0])
        msg = Dense(gt.astype(hp.downlink_compressor.value_dtype))  # g^0, dense at the wire precision
        g = wire_copy(msg)
        return BCMaster(x0 - hp.gamma * g, gt, g, 0), msg

    def master_step(self, hp, ms, payloads):
        ms.gt += mean_of(payloads, ms.x.shape[0])
        ms.t += 1
        b = hp.downlink_compressor.compress(ms.gt - ms.g, master_rng(hp.seed, ms.t))
        b.add_to(ms.g)
        ms.x -= hp.gamma * ms.g
        return ms, b
