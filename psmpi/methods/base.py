"""What every method shares: hyper-parameters, the worker context, the registry.

A method is written once as pure state updates:

* ``worker_init(ctx, x0) -> (state, payload)`` and
  ``worker_step(ctx, state, x) -> (state, payload)`` run on each worker;
* ``master_init(hp, x0, payloads) -> mstate`` and
  ``master_step(hp, mstate, payloads) -> mstate`` run on the master, where
  ``mstate.x`` is the next iterate.

Round 0 calls the ``*_init`` functions at x^0 and yields x^1; round t >= 1
calls the ``*_step`` functions at x^t and yields x^{t+1}.  Both runtimes call
these functions in the same order with the same arguments, so they produce the
same iterates.  States are small dataclasses updated in place (O(d) each).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..backend import Device, is_device_array
from ..compressors import Compressor, Dense, Payload, Sparse

REGISTRY: dict[str, type["Method"]] = {}


class MethodError(ValueError):
    """A method that cannot run as configured (e.g. with this compressor)."""


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


@dataclass
class Hyper:
    """Resolved hyper-parameters shared by master and workers."""

    n: int
    gamma: float
    eta: float = 0.1
    zeta: float = 1.0
    p: float | None = None
    shift_step: float | None = None
    batch_size: int | None = None  # None: exact local gradients
    init_batch_size: int | None = None


class WorkerContext:
    """What a worker step may use: its local problem, compressor, random streams.

    On a GPU (``device`` not on the host) the problem's data, the iterate the
    step sees and every state vector are device arrays; random numbers are
    drawn on the host from the same streams, so the choices (minibatches,
    Rand-K supports, MARINA's coin) are the same as on the CPU.
    """

    def __init__(self, index, problem, compressor: Compressor, rng, common_rng, hp: Hyper, value_dtype,
                 device: Device | None = None):
        self.index = index
        self.device = Device() if device is None else device
        self.problem = problem if self.device.on_host else problem.to_device(self.device)
        self.compressor = compressor
        self.rng = rng  # this worker's own stream (minibatches, random compressors)
        self.common = common_rng  # a stream every participant holds a copy of
        self.hp = hp
        self.value_dtype = np.dtype(value_dtype)
        self.round = -1
        self._cache_round = None
        self._cache = None
        self._x_round = None
        self._x = None
        self.batch = None  # (oracle, index): the serial runtime's stacked gradients of all workers
        # the fused EF21 kernel applies to Top-K without scaling on float64 states
        self._fused_k = getattr(compressor, "k", None) if compressor.name == "topk" and compressor.scale == 1.0 \
            else None
        # seconds spent, for `psmpi bench round` (step and encode are added by the runtime's worker_round)
        self.timings = {"gradient": 0.0, "compress": 0.0, "step": 0.0, "encode": 0.0}

    def at(self, x, t: int):
        """The iterate of round ``t`` on this worker's device (copied there once per round)."""
        if self.device.on_host or is_device_array(x):  # --cuda-aware: MPI wrote x into device memory
            return x
        if self._x_round != t:
            self._x, self._x_round = self.device.asarray(x), t
        return self._x

    def grad(self, x):
        """Exact grad f_i(x), computed once per round."""
        if self._cache_round != self.round:
            t0 = time.perf_counter()
            if self.batch is None:
                self._cache = self.problem.grad_aux(x)
            else:
                self._cache = self.batch[0].grad_aux(self.batch[1], x, self.round)
            self.timings["gradient"] += time.perf_counter() - t0
            self._cache_round = self.round
        return self._cache[0]

    def value_and_grad(self, x):
        """Exact f_i(x) and grad f_i(x) at the round's (host) iterate, on the host:
        what evaluation sends to the master."""
        x = self.at(x, self.round)
        g = self.grad(x)
        return float(self.problem.value_from(x, self._cache[1])), self.device.to_host(g)

    def sgrad(self, x, batch=None):
        """A minibatch gradient with ``batch`` (default: the run's batch size); exact when None."""
        batch = self.hp.batch_size if batch is None else batch
        if batch is None:
            return self.grad(x)
        t0 = time.perf_counter()
        g = self.problem.stoch_grad(x, self.rng, batch)
        self.timings["gradient"] += time.perf_counter() - t0
        return g

    def init_grad(self, x):
        """The gradient estimate for initial states (batch B_init).

        Exact when the run uses exact gradients or when B_init is 'full'
        (``init_batch_size`` None); ``sgrad(x, None)`` would instead fall back
        to the run's minibatch size.
        """
        if self.hp.batch_size is None or self.hp.init_batch_size is None:
            return self.grad(x)
        return self.sgrad(x, self.hp.init_batch_size)

    def dense(self, v, flag=False) -> Dense:
        """An uncompressed message of v at the wire precision."""
        return Dense(v.astype(self.value_dtype), flag)

    def compress(self, v) -> Payload:
        t0 = time.perf_counter()
        if not (self.device.on_host or self.compressor.device_native):
            v = self.device.to_host(v)  # no device version of this compressor: compress a host copy
        p = self.compressor.compress(v, self.rng)
        self.timings["compress"] += time.perf_counter() - t0
        return p

    def ef_update(self, target, g) -> Payload:
        """The error-feedback step of the EF21 family: c = C(target - g), g += c
        (in place); returns c.  On a GPU with Top-K this is one fused kernel
        pass (psmpi.kernels.ef21_step_device) and only the K indices and values
        of c ever leave the device."""
        if self._fused_k is not None and not self.device.on_host and g.dtype == np.float64 \
                and target.dtype == np.float64:
            t0 = time.perf_counter()
            idx, vals = self.device.ef_step(target, g, self._fused_k, self.value_dtype)
            self.timings["compress"] += time.perf_counter() - t0
            return Sparse(g.shape[0], idx, vals)
        c = self.compress(target - g)
        c.add_to(g)
        return c


def mean_of(payloads, d) -> np.ndarray:
    """(1/n) sum_i c_i, accumulated in worker order (the master's aggregation)."""
    acc = np.zeros(d)
    for p in payloads:
        p.add_to(acc)
    acc /= len(payloads)
    return acc


def apply(p: Payload, v: np.ndarray) -> np.ndarray:
    """v += p in place; returns v."""
    p.add_to(v)
    return v


@dataclass
class MasterG:
    """Master state of gradient-estimator methods: x and g."""

    x: np.ndarray
    g: np.ndarray


class Method:
    """Base class. Subclasses set ``name``, ``paper`` and ``compressors``."""

    name = "base"
    paper = ""
    compressors = "contractive"  # 'contractive', 'unbiased', 'identity' or 'any'
    stochastic = False  # uses minibatch gradients (default batch size 1)

    def prepare_compressor(self, comp: Compressor) -> Compressor:
        """The compressor this method runs with, or a MethodError."""
        kind = self.compressors
        if kind == "identity" and comp.name != "identity":
            raise MethodError(f"method '{self.name}' is uncompressed: use --compressor identity (got '{comp.spec}')")
        if kind == "unbiased" and not comp.unbiased:
            raise MethodError(f"method '{self.name}' needs an unbiased compressor (randk, natural, qsgd, identity); "
                              f"'{comp.spec}' is biased")
        if kind == "contractive":
            return comp.as_contractive()
        return comp

    def resolve_hyper(self, hp: Hyper, comp: Compressor) -> None:
        """Fill method defaults that depend on the compressor (MARINA's p, DIANA's shift)."""

    # step sizes ------------------------------------------------------------
    def theory_gamma(self, L: float, Lt: float, comp: Compressor, hp: Hyper) -> float:
        """Default: the EF21 step 1/(L + Lt sqrt(beta/theta)) for the compressor's alpha."""
        return ef21_gamma(L, Lt, comp.alpha)

    # default master: EF21-style g^{t+1} = g^t + mean c_i, x^{t+1} = x^t - gamma g ----
    def master_init(self, hp, x0, payloads):
        g = mean_of(payloads, x0.shape[0])
        return MasterG(x0 - hp.gamma * g, g)

    def master_step(self, hp, ms, payloads):
        ms.g += mean_of(payloads, ms.x.shape[0])
        ms.x -= hp.gamma * ms.g
        return ms


def ef21_theta_beta(alpha: float) -> tuple[float, float]:
    r = math.sqrt(max(0.0, 1.0 - alpha))
    theta = 1.0 - r
    beta = (1.0 - alpha) / theta if theta > 0 else 0.0
    return theta, beta


def ef21_gamma(L: float, Lt: float, alpha: float) -> float:
    """gamma = 1/(L + Lt sqrt(beta/theta)), theta = 1 - sqrt(1-alpha),
    beta = (1-alpha)/(1 - sqrt(1-alpha)) (Richtarik et al. 2021, Theorem 1)."""
    theta, beta = ef21_theta_beta(alpha)
    return 1.0 / (L + Lt * math.sqrt(beta / theta))


def get_method(name: str) -> "Method":
    cls = REGISTRY.get(str(name).lower())
    if cls is None:
        raise MethodError(f"unknown method '{name}'; valid: {', '.join(REGISTRY)}")
    return cls()
