"""What every method file builds on: hyper-parameter declarations, the worker
context, small aggregation helpers and the registry.

A method is one file that holds all of it (see ``ef21.py``):

* ``params``: the hyper-parameters it uses, as :class:`Param` declarations.
  They are the single source of the configuration keys, the ``train`` options
  and their ``--help``, the plot legends, the sweep grid names and the
  "option not used by this method" errors.
* ``worker_init(ctx, x0) -> (state, payload)`` and
  ``worker_step(ctx, state, x) -> (state, payload)``: a worker's part of round 0
  (at x^0) and of round t >= 1 (at x^t), written as in the paper's algorithm box;
* ``master_init(hp, x0, payloads) -> mstate`` and
  ``master_step(hp, mstate, payloads) -> mstate``: the master's aggregation,
  where ``mstate.x`` is the next iterate;
* ``theory_gamma(consts, comp, hp)``: the theoretical step with its source, or
  :class:`NoTheory` saying that theory gives none;
* ``theory``: one line for ``--help`` and the README saying which step
  ``--gamma theory`` uses and where it comes from;
* ``resync``: one line saying how the master's aggregate is rebuilt from the
  surviving workers after a worker failure (``--on-worker-failure continue``),
  with ``worker_resync``/``master_resync`` doing it (see :meth:`Method.master_resync`);
  empty: the method refuses ``continue``.  A method whose master is gradient
  tracking (``tracking_step``) gets :data:`RETRACK` without declaring it.
* a method whose master broadcasts a compressed message instead of x
  (``downlink = True``, EF21-BC) also writes ``worker_receive(ctx, state,
  payload) -> state`` (apply the master's message to the worker's own copy of
  the model) and ``worker_model(state)`` (that copy, where its step runs); its
  ``master_init``/``master_step`` return ``(mstate, payload)``: the state and the
  message to broadcast.

Both runtimes call these functions through one round driver
(:mod:`psmpi.runtime.driver`), in the same order with the same arguments, so
they produce the same iterates.  States are small dataclasses updated in place.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..backend import Device, is_device_array
from ..compressors import Compressor, Dense, Empty, NoConstant, Payload, Sparse, check_spec
from ..compressors.payload import to_host
from ..errors import MethodError
from ..wire.rows import Rows

REGISTRY: dict[str, type["Method"]] = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


class NoTheory(MethodError):
    """The method's theory gives no step size for this setting (pass --gamma)."""


# ------------------------------------------------------------ declarations ---
@dataclass(frozen=True)
class Param:
    """One hyper-parameter a method uses.

    ``kind`` is ``float``, ``int``, ``batch`` (a positive integer or
    ``full``), ``participation`` (a probability or a number of workers) or
    ``compressor`` (a spec such as ``topk:1``: a second compressor the method
    uses besides ``--compressor``; the runtime builds it for the dimension and
    ``hp.<name>`` is the built compressor); ``default`` None means the method computes it
    (:meth:`Method.default`, e.g. MARINA's p = 1/(omega+1)).  Values must lie
    in the interval from ``low`` to ``high`` (open at ``low`` unless
    ``low_closed``; closed at ``high``).  ``in_theory``: the theoretical step
    depends on it.  ``symbol`` is its name in plot legends.
    """

    name: str
    kind: str
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    low_closed: bool = False
    in_theory: bool = False
    symbol: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        if self.kind == "batch":
            return "a positive integer or full"
        if self.kind == "compressor":
            return "a compressor spec NAME[:PARAM]"
        if self.kind == "participation":
            return "a probability in (0, 1] written with a point (0.5, 1.0) or a number of workers K >= 1"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'[' if self.low_closed else '('}{lo}, {hi}{']' if self.high is not None else ')'}"

    def parse(self, value):
        """The value checked and converted; MethodError (one line) if it is not valid."""
        if self.kind == "batch":
            if str(value).lower() == "full":
                return "full"
            return _int_in(self, value, 1)
        if self.kind == "compressor":
            check_spec(value)
            return str(value)
        if self.kind == "participation":
            return _participation(self, value)
        if self.kind == "int":
            v = _int_in(self, value, self.low)
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise MethodError(f"{self.flag} must be a number in {self.range_text()} (got {value!r})") from None
        ok = math.isfinite(v) and (self.low is None or v > self.low or (self.low_closed and v == self.low)) \
            and (self.high is None or v <= self.high)
        if not ok:
            raise MethodError(f"{self.flag} must be in {self.range_text()} (got {v:g})")
        return v

    def label(self, value) -> str:
        return f"{self.symbol or self.name}={value}"


def _int_in(p: Param, value, low) -> int:
    try:
        iv = int(value)
        if iv != float(value) or (low is not None and iv < low):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise MethodError(f"{p.flag} must be {p.range_text() if p.kind == 'batch' else 'an integer'} "
                          f"(got {value!r})") from None
    return iv


def _participation(p: Param, value):
    """An int K >= 1 (workers per round) or a float probability in (0, 1]."""
    text = str(value).strip()
    if isinstance(value, int) or text.isdigit():
        if int(text) < 1:
            raise MethodError(f"{p.flag} must be {p.range_text()} (got {value!r})")
        return int(text)
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0.0 < v <= 1.0:
        raise MethodError(f"{p.flag} must be {p.range_text()} (got {value!r})")
    return v


def batch_params(default) -> tuple[Param, Param]:
    """``batch_size`` and ``init_batch_size`` for a method that takes minibatch
    gradients; ``default`` 1 for the stochastic methods, 'full' for methods
    whose minibatch version is optional (GD, DCGD, EF14, DIANA)."""
    return (Param("batch_size", "batch", default, "per-worker minibatch size, or full (exact local gradients)",
                  symbol="B"),
            Param("init_batch_size", "batch", None, "minibatch B_init of the initial states g_i^0, v_i^0 "
                  "[default: the batch size]", symbol="B_init"))


class Hyper:
    """The resolved hyper-parameters of a run, shared by master and workers:
    ``n`` (workers), ``gamma`` (the step used), ``seed``, ``batch_size`` and
    ``init_batch_size`` (None: exact gradients) and each declared parameter
    of the method by name."""

    def __init__(self, n: int, gamma: float, seed: int = 0, **params):
        self.n = n
        self.gamma = gamma
        self.seed = seed  # the run's seed: the master's own streams derive from it (master_rng)
        self.batch_size = None
        self.init_batch_size = None
        for k, v in params.items():
            setattr(self, k, None if v == "full" else v)

    def __repr__(self):
        return f"Hyper({vars(self)})"


# ------------------------------------------------------------------ worker ---
class WorkerContext:
    """What a worker step may use: its local problem, compressor, random streams.

    On a GPU (``device`` not on the host) the problem's data, the iterate the
    step sees and every state vector are device arrays; random numbers are
    drawn on the host from the same streams, so the choices (minibatches,
    Rand-K supports, MARINA's coin) are the same as on the CPU.
    """

    def __init__(self, index, problem, compressor: Compressor, rng, common_rng, hp: Hyper, value_dtype,
                 device: Device | None = None, eval_problem=None):
        self.index = index
        self.device = Device() if device is None else device
        self.problem = problem if self.device.on_host else problem.to_device(self.device)
        if eval_problem is None or eval_problem is problem:
            self.eval_problem = self.problem  # evaluations share the round's exact gradient
        else:  # --eval-rows: a fixed subset of the local rows
            self.eval_problem = eval_problem if self.device.on_host else eval_problem.to_device(self.device)
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
        self.samples = 0  # sample gradients the method's steps used (the oracle calls of /metrics/samples)
        self._counted_round = None
        # seconds spent, for `psmpi bench round` (step and encode are added by the driver's worker round;
        # evaluate: the evaluations' own work, not a gradient the round's step shares)
        self.timings = {"gradient": 0.0, "compress": 0.0, "step": 0.0, "encode": 0.0, "evaluate": 0.0}

    @property
    def compressor(self) -> Compressor:
        return self._compressor

    @compressor.setter
    def compressor(self, comp: Compressor) -> None:
        self._compressor = comp
        self._fused = comp.fuses_ef_step(self.device)  # (asked once: a short vector's round is microseconds)

    def phase_seconds(self) -> dict:
        """``timings`` and ``forward_backward``: the part of the gradients spent in a neural
        network's forward and backward passes (the problem's own timer), for any other
        problem the whole gradient time."""
        fb = getattr(self.problem, "forward_backward_seconds", None)
        return dict(self.timings, forward_backward=self.timings["gradient"] if fb is None else fb)

    def at(self, x, t: int):
        """The iterate of round ``t`` on this worker's device (copied there once per round)."""
        if self.device.on_host or is_device_array(x):  # --cuda-aware: MPI wrote x into device memory
            return x
        if self._x_round != t:
            self._x, self._x_round = self.device.asarray(x), t
        return self._x

    def grad(self, x):
        """Exact grad f_i(x), computed once per round (and counted once: all local rows)."""
        g = self._exact(x)
        if self._counted_round != self.round:
            self.samples += self.problem.rows
            self._counted_round = self.round
        return g

    def _exact(self, x):
        if self._cache_round != self.round:
            t0 = time.perf_counter()
            if self.batch is None:
                self._cache = self.problem.grad_aux(x)
            else:
                self._cache = self.batch[0].grad_aux(self.batch[1], x, self.round)
            self.timings["gradient"] += time.perf_counter() - t0
            self._cache_round = self.round
        return self._cache[0]

    def end_round(self) -> None:
        """Drop the round's exact gradient (an O(d) array per worker the state need not keep)."""
        self._cache = self._cache_round = None

    def evaluate(self, x):
        """(f_i(x), grad f_i(x) on the host, local rows x classifies correctly or None, rows
        evaluated) at the round's (host) iterate, exactly on the evaluation rows: all local
        rows (sharing the round's exact gradient), or the --eval-rows subset."""
        t0, shared = time.perf_counter(), self.timings["gradient"]
        x = self.at(x, self.round)
        p = self.eval_problem
        if p is self.problem:
            g = self._exact(x)  # not counted in samples: evaluation is the experimenter's, not the method's
            aux = self._cache[1]
        else:
            g, aux = p.grad_aux(x)
        right = p.correct(x, aux)
        out = float(p.value_from(x, aux)), self.device.to_host(g), right, 0 if right is None else p.rows
        self.timings["evaluate"] += time.perf_counter() - t0 - (self.timings["gradient"] - shared)
        return out

    def sgrad(self, x, batch=None):
        """A minibatch gradient with ``batch`` (default: the run's batch size); exact when None."""
        batch = self.hp.batch_size if batch is None else batch
        if batch is None:
            return self.grad(x)
        t0 = time.perf_counter()
        g = self.problem.stoch_grad(x, self.rng, batch)
        self.timings["gradient"] += time.perf_counter() - t0
        self.samples += batch
        return g

    def minibatch(self, batch=None):
        """A minibatch sample of ``batch`` rows (default: the run's batch size) from this
        worker's stream, to evaluate at one or more points with :meth:`batch_grad`."""
        batch = self.hp.batch_size if batch is None else batch
        return batch, self.problem.minibatch(self.rng, batch)

    def batch_grad(self, x, sample):
        """The minibatch gradient at x on ``sample`` (from :meth:`minibatch`); each call
        counts the sample's rows (the same rows at two points are two gradients' work)."""
        batch, idx = sample
        t0 = time.perf_counter()
        g = self.problem.batch_grad(x, idx)
        self.timings["gradient"] += time.perf_counter() - t0
        self.samples += batch
        return g

    def grad_at(self, x):
        """Exact grad f_i at a point other than the round's iterate (MARINA's difference
        with partial participation needs the previous iterate's): not cached, counted."""
        t0 = time.perf_counter()
        g = self.problem.grad_aux(x)[0]
        self.timings["gradient"] += time.perf_counter() - t0
        self.samples += self.problem.rows
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

    def compress(self, v, compressor: Compressor | None = None) -> Payload:
        """C(v): this worker's compressor (or ``compressor``, e.g. a method's second
        one, ``ctx.hp.compressor2``), with the worker's own random stream."""
        t0 = time.perf_counter()
        comp = self.compressor if compressor is None else compressor
        if not (self.device.on_host or comp.device_native):
            v = self.device.to_host(v)  # no device version of this compressor: compress a host copy
        p = comp.compress(v, self.rng)
        self.timings["compress"] += time.perf_counter() - t0
        return p

    def ef21_update(self, target, g) -> Payload:
        """The error-feedback step of the EF21 family: c = C(target - g); g += c
        (in place); returns c, the message.  A compressor that has a fused form
        of this step (``Compressor.fused_ef_step``, Top-K) runs it: on a device
        one kernel pass, only the message leaving the device; on the host a
        selection that never writes target - g."""
        if self._fused:
            t0 = time.perf_counter()
            c = self.compressor.fused_ef_step(self.device, target, g, self.value_dtype)
            if c is not None:
                self.timings["compress"] += time.perf_counter() - t0
                return c
        c = self.compress(target - g)
        c.add_to(g)
        return c


def summed(a: Payload | None, b: Payload, value_dtype) -> Payload:
    """One message carrying a + b, for a method whose update adds two compressed
    vectors (3PCv2-v4): ``b`` alone when ``a`` is None or empty; on the union of the
    supports when both are sparse; else dense.  The values are the wire values'
    sums rounded to ``value_dtype``: worker and master both apply this message."""
    if a is None or isinstance(a, Empty):
        return b
    if isinstance(b, Empty):
        return a
    a, b = to_host(a), to_host(b)
    if isinstance(a, Sparse) and isinstance(b, Sparse):
        ia, ib = np.asarray(a.indices, dtype=np.int64), np.asarray(b.indices, dtype=np.int64)
        idx = np.union1d(ia, ib)
        vals = np.zeros(idx.shape[0])
        vals[np.searchsorted(idx, ia)] += a.values
        vals[np.searchsorted(idx, ib)] += b.values
        return Sparse(a.d, idx, vals.astype(value_dtype))
    out = a.to_dense()
    b.add_to(out)
    return Dense(out.astype(value_dtype))


def wire_copy(msg: Dense) -> np.ndarray:
    """The float64 vector a dense message carries (what the master adds)."""
    return msg.values.astype(np.float64)


# ------------------------------------------------------------------ master ---
def mean_of(payloads, d, count: int | None = None) -> np.ndarray:
    """(1/n) sum_i c_i, accumulated in worker order (the master's aggregation);
    a worker that sent nothing (None: it sat the round out) adds nothing.  The sum
    is divided by ``count`` when given (PP-MARINA: the r sampled workers), else by n."""
    acc = np.zeros(d)
    if isinstance(payloads, Rows):  # one sparse layout: all the additions in one call, in the same order
        np.add.at(acc, payloads.indices.ravel(), payloads.values.ravel())
    else:
        for p in payloads:
            if p is not None:
                p.add_to(acc)
    acc /= len(payloads) if count is None else count
    return acc


def master_rng(seed: int, t: int) -> np.random.Generator:
    """The master's own stream for round t (a random downlink compressor), derived from
    (seed, t) alone: nothing to checkpoint.  (Workers' streams: spawn keys (1, i), the
    common one (0,), x^0's (2,); this one (3, t).)"""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(3, t))))


@dataclass
class MasterG:
    """Master state of gradient-estimator methods: the iterate x and the estimate g."""

    x: np.ndarray
    g: np.ndarray


@dataclass
class MasterX:
    """Master state of methods whose messages are the step itself."""

    x: np.ndarray


def tracking_init(hp, x0, payloads) -> MasterG:
    """Gradient tracking, round 0: g^0 = (1/n) sum_i g_i^0 (sent dense); x^1 = x^0 - gamma g^0."""
    g = mean_of(payloads, x0.shape[0])
    return MasterG(x0 - hp.gamma * g, g)


def tracking_step(hp, ms: MasterG, payloads) -> MasterG:
    """Gradient tracking, round t: g^t = g^{t-1} + (1/n) sum_i c_i; x^{t+1} = x^t - gamma g^t.
    The master of EF21 and of every method whose messages are increments of g_i."""
    ms.g += mean_of(payloads, ms.x.shape[0])
    ms.x -= hp.gamma * ms.g
    return ms


# ------------------------------------------------------------ re-synchronisation ---
RESEND = ("the master keeps no per-worker sum: the survivors' messages of the round are aggregated as usual "
          "(no extra bytes)")
RETRACK = ("each survivor sends its g_i dense in float64 (counted in bytes_up); the master's g becomes their "
           "mean and it steps from there")


def send_g(ctx, st) -> Dense:
    """A survivor's re-synchronisation message for gradient tracking: g_i, dense, float64."""
    return Dense(np.asarray(st.g, dtype=np.float64))


def retrack(hp, ms, x, payloads, t: int) -> MasterG:
    """g = mean of the survivors' g_i; x^{t+1} = x^t - gamma g (the tracking round-0 rule)."""
    return tracking_init(hp, x, payloads)


# ------------------------------------------------------------------ method ---
class Method:
    """Base class: declarations and the checks derived from them; no update rule."""

    name = "base"
    title = ""  # one line for the README's method table (default: the docstring's first line)
    compressor_note = ""  # the table's compressor column when it says more than ``compressors``
    paper = ""
    compressors = "contractive"  # 'contractive', 'unbiased', 'identity' or 'any'
    params: tuple = ()  # Param declarations
    exact_sibling: str | None = None  # the exact-gradient version of a stochastic method
    stochastic_sibling: str | None = None  # the minibatch version of an exact-gradient method
    theory = ""  # one line: the step 'theory' uses, and its source
    resync = ""  # one line: how the aggregate is rebuilt after a worker failure ('': continue is refused)
    independent_compressors = False  # the theory step assumes the workers' compressors independent (omega/n)
    downlink = False  # the master broadcasts a compressed message, not x (see the module docstring)

    # declarations -----------------------------------------------------------
    @classmethod
    def table_row(cls) -> str:
        """The method's row of the README's method table, from its declarations."""
        title = cls.title or (cls.__doc__ or cls.name).strip().splitlines()[0]
        opts = ", ".join(p.flag for p in cls.params) or "-"
        return f"| `{cls.name}` | {title} | {cls.compressor_note or cls.compressors} | {opts} | {cls.theory} |"

    @property
    def default_compressor(self) -> str:
        return {"identity": "identity", "unbiased": "randk:1"}.get(self.compressors, "topk:1")

    @classmethod
    def param(cls, name: str) -> Param | None:
        return next((p for p in cls.params if p.name == name), None)

    stochastic = False  # takes minibatch gradients by default (batch size 1): derived from params

    has_theory = True  # derived: False when the method does not define theory_gamma (pass --gamma)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        p = cls.param("batch_size")
        cls.stochastic = p is not None and p.default != "full"
        cls.has_theory = cls.theory_gamma is not Method.theory_gamma
        if cls.master_step is tracking_step and "resync" not in cls.__dict__:  # g = mean of the g_i
            cls.resync, cls.worker_resync, cls.master_resync = RETRACK, staticmethod(send_g), staticmethod(retrack)

    def refuse(self, name: str) -> MethodError:
        """The error for an option this method does not use."""
        flag = "--" + name.replace("_", "-")
        users = users_of(name)
        if name in ("batch_size", "init_batch_size") and self.stochastic_sibling:
            return MethodError(f"method '{self.name}' uses exact gradients and takes no {flag}; "
                               f"its minibatch version is '{self.stochastic_sibling}'")
        hint = f" (used by {', '.join(users)})" if users else ""
        return MethodError(f"method '{self.name}' does not use {flag}{hint}")

    def default(self, name: str, comp: Compressor):
        """Defaults that depend on the compressor (declared with default None)."""
        raise NotImplementedError(f"{self.name} declares no default for {name}")

    def resolve(self, given: dict, comp: Compressor | None = None) -> dict:
        """The method's parameters: given values checked, declared defaults filled
        in, and, once the compressor is known (``comp``), those that depend on it
        (before that they stay None).  B_init defaults to the batch size.
        Options the method does not declare are refused."""
        for k in given:
            if self.param(k) is None:
                raise self.refuse(k)
        out = {}
        for p in self.params:
            if given.get(p.name) is not None:
                out[p.name] = p.parse(given[p.name])
            elif p.name == "init_batch_size":
                out[p.name] = out["batch_size"]
            elif p.default is not None or comp is None:
                out[p.name] = p.default
            else:
                try:
                    out[p.name] = self.default(p.name, comp)
                except NoConstant as e:
                    raise MethodError(f"method '{self.name}': {p.flag} defaults to a constant of the compressor, "
                                      f"but {e}: pass {p.flag}") from None
        return out

    def check(self, hp: "Hyper") -> None:
        """Checks that need the run's other settings (e.g. the number of workers);
        MethodError (one line) when the combination cannot run."""

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

    def prepare_second(self, name: str, comp: Compressor) -> Compressor:
        """A second compressor the method declares (kind 'compressor'): by default
        used as it is; a method that needs a class of compressor checks it here."""
        return comp

    def theory_step(self, consts, comp: Compressor, hp: Hyper) -> float:
        """:meth:`theory_gamma`, unless its theory assumes independent compressors and
        ``comp`` is correlated across workers (PermK): then NoTheory."""
        if self.independent_compressors and comp.correlated:
            raise NoTheory(f"method '{self.name}': its theory step assumes independent compressors and "
                           f"{comp.spec} is correlated across workers, so theory gives no step: pass --gamma")
        return self.theory_gamma(consts, comp, hp)

    # the algorithm (each method file writes these) ---------------------------
    def theory_gamma(self, consts, comp: Compressor, hp: Hyper) -> float:
        raise NoTheory(f"method '{self.name}': theory gives no step size; pass --gamma")

    def worker_init(self, ctx: WorkerContext, x):
        raise NotImplementedError

    def worker_step(self, ctx: WorkerContext, state, x):
        raise NotImplementedError

    def master_init(self, hp: Hyper, x0, payloads):
        raise NotImplementedError

    def master_step(self, hp: Hyper, mstate, payloads):
        raise NotImplementedError

    # after a worker failure (--on-worker-failure continue) ----------------------
    def worker_resync(self, ctx: WorkerContext, state):
        """What a surviving worker sends in the re-synchronisation round, after its
        step of round t; None: its message of round t again."""
        return None

    def master_resync(self, hp: Hyper, mstate, x, payloads, t: int):
        """The master state after round t (``mstate.x`` = x^{t+1}) from the survivors'
        re-synchronisation payloads (worker order); ``mstate`` holds round t-1's
        aggregate over all the workers (None at t = 0), ``x`` is x^t.  The default
        aggregates the payloads as round t's messages (:data:`RESEND`)."""
        return self.master_init(hp, x, payloads) if t == 0 else self.master_step(hp, mstate, payloads)

    def check_resync(self) -> None:
        """MethodError (one line) when the method cannot go on after a worker failure."""
        if not self.resync:
            raise MethodError(f"method '{self.name}' cannot re-synchronise after a worker failure; "
                              f"use --on-worker-failure abort")
    # a downlink method (downlink = True) also writes these ---------------------
    def worker_receive(self, ctx: WorkerContext, state, payload):
        """Apply the master's broadcast message (decoded) to the worker's state."""
        raise NotImplementedError

    def worker_model(self, state):
        """The worker's own copy of the model, where its step of the round runs."""
        raise NotImplementedError


# ----------------------------------------------------------- step helpers ---
def ef21_theta_beta(alpha: float) -> tuple[float, float]:
    """theta = 1 - sqrt(1 - alpha), beta = (1 - alpha)/(1 - sqrt(1 - alpha)) (EF21, Lemma 3 with s chosen optimally)."""
    r = math.sqrt(max(0.0, 1.0 - alpha))
    theta = 1.0 - r
    beta = (1.0 - alpha) / theta if theta > 0 else 0.0
    return theta, beta


def ef21_gamma(L: float, Lt: float, alpha: float) -> float:
    """gamma = 1/(L + Lt sqrt(beta/theta)) (Richtarik, Sokolov, Fatkhullin 2021, Theorem 1)."""
    theta, beta = ef21_theta_beta(alpha)
    return 1.0 / (L + Lt * math.sqrt(beta / theta))


def three_pc_gamma(L: float, Lt: float, A: float, B: float) -> float:
    """gamma = 1/(L + Lt sqrt(B/A)) for a three-point compressor with constants (A, B)
    (Richtarik et al. 2022, 3PC, its main theorem for three-point compressors)."""
    if A <= 0:
        raise MethodError("the compressor's constant A must be positive (alpha > 0)")
    return 1.0 / (L + Lt * math.sqrt(B / A))


class ThreePC(Method):
    """A method whose g_i^{t+1} is a three-point compressor C_{g_i^t, grad f_i(x^t)}(grad f_i(x^{t+1}))
    (3PC paper): its step is the 3PC theorem's for the (A, B) that ``constants`` gives."""

    def constants(self, comp: Compressor, hp: Hyper) -> tuple[float, float]:
        raise NotImplementedError

    def theory_gamma(self, consts, comp, hp):
        return three_pc_gamma(consts.L, consts.L_tilde, *self.constants(comp, hp))


def users_of(name: str) -> list:
    """The registered methods that declare the hyper-parameter ``name``."""
    return [m for m, c in REGISTRY.items() if c.param(name) is not None]


def get_method(name: str) -> "Method":
    cls = REGISTRY.get(str(name).lower())
    if cls is None:
        raise MethodError(f"unknown method '{name}'; valid: {', '.join(REGISTRY)}")
    return cls()
