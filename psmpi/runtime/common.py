"""What both runtimes share: problem set-up, constants, seeds, the round pieces
(worker round, aggregation, evaluation) and the metrics recorder.  Keeping
these in one place is what makes the serial and MPI iterates identical."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from ..backend import emulating, get_device
from ..compressors import NoConstant, Setting, compressor_class, make_compressor
from ..config import TrainConfig, checkpoint_path
from ..data import RowSubset, class_labels, load_shard, open_dataset
from ..data.splits import eval_share, eval_subset
from ..errors import ConfigError, MethodError, Stop
from ..methods import Hyper, WorkerContext, get_method
from ..problems import LogReg, Softmax, is_nn_problem, lambda_max

DIVERGED = 1e20  # ||grad f||^2 above DIVERGED * max(1, its value at x^0), or non-finite, stops the run


# ---------------------------------------------------------------- seeds ---
def worker_rng(seed: int, index: int) -> np.random.Generator:
    """Worker ``index``'s own stream, derived from (seed, index) alone."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(1, index))))


def common_rng(seed: int) -> np.random.Generator:
    """A stream every participant holds a copy of (shared coins, e.g. MARINA)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0,))))


def initial_point(cfg: TrainConfig, d: int, info=None) -> np.ndarray:
    """x^0: zeros (the default; for a neural network its seeded initialisation,
    'init'), ones, seeded normal, or a .npy file."""
    model = None if info is None else info.model
    if cfg.x0 is None:
        cfg.x0 = "zeros" if model is None else "init"
    if cfg.x0 == "init":
        if model is None:
            raise ConfigError("--x0 init is the initialisation of a neural network (--problem mlp, cnn, ...)")
        return model.x0.astype(np.float64)
    if cfg.x0 == "zeros":
        return np.zeros(d)
    if cfg.x0 == "ones":
        return np.ones(d)
    if cfg.x0 == "normal":
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.seed, spawn_key=(2,)))).standard_normal(d)
    try:
        x0 = np.load(cfg.x0).astype(np.float64).ravel()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read --x0 {cfg.x0}: {e}") from None
    if x0.shape != (d,):
        raise ConfigError(f"--x0 {cfg.x0} has {x0.size} entries, the problem has dimension {d}")
    return x0


# ---------------------------------------------------------------- problems ---
@dataclass
class DataInfo:
    dataset: object  # a Dataset, or the list of per-worker problems for quad:...
    problem: str
    classes: np.ndarray
    dim: int  # length of x
    hdim: int  # dimension of the curvature bounds H_i (0: no smoothness constants, a neural network)
    reg: float  # curvature bound of the regulariser
    model: object = None  # a neural network's FlatModel (its seeded x0), shared by the workers one process hosts
    test: object = None  # the held-out test Dataset (--test-dataset / --test-fraction)

    @property
    def classifier(self) -> bool:
        return self.problem in ("logreg", "softmax") or self.model is not None


def describe_data(cfg: TrainConfig) -> DataInfo:
    """Open the dataset's metadata (no rows) and pick the problem."""
    if str(cfg.dataset).startswith("quad:"):
        from ..problems.catalog import quadratic_problems

        if cfg.problem not in (None, "quadratic"):
            raise ConfigError(f"--dataset {cfg.dataset} is a quadratic problem, not {cfg.problem}")
        if cfg.test_dataset or cfg.test_fraction:
            raise ConfigError(f"--dataset {cfg.dataset} has no data rows to test on: drop --test-dataset/--test-fraction")
        if cfg.eval_rows != "full":
            raise ConfigError(f"--dataset {cfg.dataset} has no data rows to evaluate a subset of: drop --eval-rows")
        probs = quadratic_problems(cfg.dataset, cfg.workers)
        return DataInfo(probs, "quadratic", np.zeros(0), probs[0].dim, probs[0].dim, 0.0)
    if is_nn_problem(cfg.problem):
        return _describe_nn(cfg)
    ds = open_dataset(cfg.dataset)
    classes = ds.classes
    problem = cfg.problem or ("logreg" if len(classes) == 2 else "softmax")
    if problem == "quadratic":
        raise ConfigError("the quadratic problem takes matrices from the Python API "
                          "(psmpi.train(config, problems=...)) or --dataset quad:...")
    if problem == "logreg" and len(classes) != 2:
        raise ConfigError(f"logreg needs 2 label values; {cfg.dataset} has {len(classes)} (use --problem softmax)")
    if problem == "softmax" and cfg.device == "gpu":
        raise ConfigError("--device gpu runs logreg and quadratic problems; softmax runs on the CPU only")
    dim = ds.n_features if problem == "logreg" else ds.n_features * len(classes)
    ds, test = _split_test(cfg, ds, open_dataset)
    return DataInfo(ds, problem, classes, dim, ds.n_features, 2.0 * cfg.lam, test=test)


def _split_test(cfg: TrainConfig, ds, opener):
    """(training data, test data or None) for --test-fraction / --test-dataset."""
    from ..data import hold_out

    if cfg.test_fraction:
        return hold_out(ds, cfg.test_fraction, cfg.seed)
    if not cfg.test_dataset:
        return ds, None
    test = opener(cfg.test_dataset)
    if test.n_features > ds.n_features:
        raise ConfigError(f"--test-dataset {cfg.test_dataset} has {test.n_features} features, the training data "
                          f"{ds.n_features}")
    unknown = np.setdiff1d(test.classes, ds.classes)
    if unknown.size:
        raise ConfigError(f"--test-dataset {cfg.test_dataset} has labels the training data lacks: {unknown[:5]}")
    return ds, test


def _describe_nn(cfg: TrainConfig) -> DataInfo:
    """A neural network (psmpi[torch]) on an image dataset: its flat parameter vector is x."""
    from ..data.images import open_images
    from ..problems.nn import FlatModel

    if cfg.device == "gpu" and not emulating():
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device gpu runs --problem {cfg.problem} with torch on CUDA, and this torch "
                              f"{torch.__version__} sees no CUDA device: install a CUDA build of torch")
    ds = open_images(cfg.dataset)
    try:
        model = FlatModel(cfg.problem, ds.image_shape, len(ds.classes), cfg.seed)
    except ValueError as e:
        raise ConfigError(f"--problem {cfg.problem}: {e}") from None
    ds, test = _split_test(cfg, ds, open_images)
    return DataInfo(ds, cfg.problem, ds.classes, model.dim, 0, 0.0, model, test)


def local_problem(cfg: TrainConfig, info: DataInfo, index: int):
    """Worker ``index``'s f_i, reading only its own rows."""
    if info.problem == "quadratic":
        return info.dataset[index]
    return _problem_on(cfg, info, info.dataset, cfg.workers, index)


def make_recorder(cfg: TrainConfig, n: int, info: DataInfo | None, classifier: bool) -> "Recorder":
    """The master's recorder; ``classifier`` adds train_accuracy; the test set's score when
    the run has one (f on its rows, or on an --eval-rows subset of them, read here, on the master)."""
    tester = None
    if info is not None and info.test is not None:
        test = info.test
        if cfg.eval_rows != "full" and cfg.eval_rows < test.n_rows:
            test = RowSubset(test, eval_subset(test.n_rows, cfg.eval_rows, cfg.seed), f"{test.name}-eval")
        tester = _problem_on(cfg, info, test, 1, 0)
    return Recorder(cfg, n, classifier, None if tester is None else tester.score)


def eval_problem(cfg: TrainConfig, problem, index: int):
    """Worker ``index``'s evaluation problem: ``problem`` itself (--eval-rows full, or a share
    at least its rows), else the problem on a seeded subset of its share of --eval-rows."""
    if cfg.eval_rows == "full":
        return problem
    m, rows = eval_share(cfg.eval_rows, cfg.workers, index), getattr(problem, "rows", None)
    if rows is not None and m >= rows:
        return problem
    if m == 0:
        raise ConfigError(f"--eval-rows {cfg.eval_rows} leaves worker {index} no rows to evaluate on: give at "
                          f"least one row per worker ({cfg.workers})")
    try:
        if rows is None:
            raise NotImplementedError
        return problem.subset(eval_subset(rows, m, cfg.seed, index))
    except NotImplementedError:
        raise ConfigError(f"--eval-rows: the problem {type(problem).__name__} has no rows to take a subset of; "
                          f"drop --eval-rows") from None


def _problem_on(cfg, info: DataInfo, ds, n: int, index: int):
    """The problem on part ``index`` of ``n`` of ``ds``'s rows (a worker's shard, or a whole test set)."""
    split = cfg.split if n > 1 else "contiguous"
    if info.model is not None:
        from ..problems.nn import NNProblem

        sh = load_shard(ds, n, index, split, cfg.seed, dense=True)
        return NNProblem(sh.A, class_labels(sh.labels, info.classes, False), ds.image_shape, len(info.classes),
                         info.model, cfg.seed)
    shard = load_shard(ds, n, index, split, cfg.seed)
    A = shard.A
    if A.shape[1] < info.hdim:  # a test file whose last features never occur
        import scipy.sparse as sp

        A = sp.csr_matrix((A.data, A.indices, A.indptr), shape=(A.shape[0], info.hdim))
    if info.problem == "logreg":
        return LogReg(A, class_labels(shard.labels, info.classes, True), cfg.lam)
    return Softmax(A, class_labels(shard.labels, info.classes, False), len(info.classes), cfg.lam)


def sum_in_order(items, n: int) -> np.ndarray:
    """(1/n) sum of arrays in the given order: the one reduction both runtimes use."""
    acc = None
    for a in items:
        if acc is None:
            acc = np.array(a, dtype=np.float64)
        else:
            acc += a
    acc /= n
    return acc


def global_smoothness(dim: int, reg: float, dense_blocks, matvec_sum) -> float:
    """L = lambda_max(mean_i H_i) + reg from the workers' curvature bounds."""
    return lambda_max(dim, dense_blocks, matvec_sum) + reg


@dataclass
class Constants:
    """L, L_tilde = sqrt(mean L_i^2) and the L_i; NaN where the problem has none (neural networks)."""

    L: float
    L_tilde: float
    L_i: list

    @property
    def known(self) -> bool:
        return math.isfinite(self.L)


def constants_from(L: float, Li) -> Constants:
    Li = [float(v) for v in Li]
    return Constants(float(L), math.sqrt(sum(v * v for v in Li) / len(Li)), Li)


UNKNOWN = Constants(math.nan, math.nan, [])


# ---------------------------------------------------------------- method ---
@dataclass
class Plan:
    method: object
    compressor: object
    hp: Hyper
    gamma_theory: float


def plan_run(cfg: TrainConfig, d: int, consts: Constants, blocks=None) -> Plan:
    """Method, compressor and hyper-parameters, including the step size used;
    the method's resolved parameters are written back to ``cfg.params``.
    ``blocks``: a neural network's parameter blocks (``(offset, shape)`` each), for powersgd."""
    method = get_method(cfg.method)
    try:
        comp = method.prepare_compressor(make_compressor(cfg.compressor, d, cfg.value_dtype,
                                                         Setting(cfg.workers, blocks)))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cfg.params = method.resolve(cfg.params, comp)
    hp = Hyper(cfg.workers, 0.0, seed=cfg.seed, **cfg.params)
    method.check(hp)
    for p in method.params:  # second compressors, built for the dimension (the config keeps the spec)
        if p.kind == "compressor":
            spec = cfg.params[p.name]
            try:
                if "+" not in spec and compressor_class(spec).per_worker:
                    raise ConfigError(f"{spec.partition(':')[0]} can only be the main --compressor (each worker "
                                      f"runs its own copy of it)")
                setattr(hp, p.name, method.prepare_second(p.name, make_compressor(spec, d, cfg.value_dtype)))
            except ValueError as e:
                raise ConfigError(f"{p.flag}: {e}") from None
    if cfg.gamma == "theory":
        if not consts.known:
            raise ConfigError(f"--problem {cfg.problem} has no smoothness constant, so theory gives no step: "
                              f"pass --gamma STEP")
        try:
            theory = step = method.theory_step(consts, comp, hp)
        except NoConstant as e:
            raise ConfigError(f"--gamma theory: {e}, so theory gives no step: pass --gamma STEP") from None
    else:
        theory, step = _try_theory(method, consts, comp, hp), float(cfg.gamma)
    hp.gamma = step * cfg.gamma_factor
    return Plan(method, comp, hp, theory)


def _try_theory(method, consts, comp, hp):
    """The theoretical step for the record when an explicit step is used (None if theory gives none)."""
    try:
        return method.theory_step(consts, comp, hp) if consts.known else None
    except (MethodError, NoConstant):
        return None


def make_context(cfg, plan: Plan, index: int, problem) -> WorkerContext:
    """Worker ``index``'s context; with --device gpu its problem moves to the device here,
    after the constants were computed on the host."""
    evaluation = eval_problem(cfg, problem, index)
    try:
        device = get_device(cfg.device)
        ctx = WorkerContext(index, problem, plan.compressor, worker_rng(cfg.seed, index), common_rng(cfg.seed),
                            plan.hp, cfg.value_dtype, device, evaluation)
    except (NotImplementedError, RuntimeError) as e:
        raise ConfigError(f"--device {cfg.device}: {e}") from None
    # its own copy of a per-worker compressor (PermK's block, PowerSGD's state); the round is the context's
    ctx.compressor = plan.compressor.for_worker(index, cfg.seed, lambda: ctx.round)
    return ctx


def make_workers(cfg, plan: Plan, problems: dict):
    """Workers for {index: problem}, in index order; on the CPU the logistic
    regression gradients of the workers one process hosts come from one stacked
    product per round (bit-identical to the separate ones)."""
    from ..problems.logreg import LogRegBatch
    from .driver import Worker

    workers = [Worker(plan.method, make_context(cfg, plan, i, problems[i])) for i in sorted(problems)]
    if cfg.device == "cpu" and len(workers) > 1 and LogRegBatch.applies([w.ctx.problem for w in workers]):
        oracle = LogRegBatch([w.ctx.problem for w in workers])
        for j, w in enumerate(workers):
            w.ctx.batch = (oracle, j)
    return workers


def hosted(n: int, ranks: int, r: int) -> range:
    """The workers worker rank r (0-based among ranks worker ranks) hosts: n
    workers in contiguous blocks, the first n % ranks blocks one larger."""
    q, rem = divmod(n, ranks)
    lo = r * q + min(r, rem)
    return range(lo, lo + q + (1 if r < rem else 0))


WORKER_PHASES = ("gradient", "forward_backward", "compress", "step", "encode", "evaluate")  # phase_seconds()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- metrics ---
class Recorder:
    """Metrics rows, byte counters, the progress bar, why the run stopped; rank 0 / serial only."""

    NAMES = ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bits_down_per_worker", "bytes_up",
             "bytes_down", "wall_time", "bits_up_by_worker", "samples", "n_workers")
    INTS = ("iteration", "bytes_up", "bytes_down", "samples", "n_workers")

    def __init__(self, cfg: TrainConfig, n: int, classifier: bool = False, tester=None):
        """``classifier``: record train_accuracy (on the evaluation rows);
        ``tester``: x -> (test loss, test accuracy or None) on the master's test set."""
        self.cfg = cfg
        self.n = n
        self.tester = tester
        names = self.NAMES + (("train_accuracy",) if classifier else ()) + \
            (("test_loss", "test_accuracy") if tester else ())
        self.rows = {k: [] for k in names}
        self.bytes_down = 0
        self.opening_down = 0  # bytes the current round's opening broadcast to the n workers (counted with it)
        self.bytes_by_worker = np.zeros(n, dtype=np.int64)  # cumulative message bytes of each worker
        self.bytes_up_round0 = 0  # the initial round's messages (often dense), for per-round rates
        self.offset = 0.0  # wall time already spent before a resume
        self.master_time = 0.0  # seconds in decoding and aggregation
        self.eval_time = 0.0  # seconds in evaluations (the workers' and the test set's), as the master waits
        self.last_eval_time = 0.0  # of the latest evaluation alone
        self.t0 = None
        self.bar = None
        self.on_eval = cfg.extra.get("on_eval")  # the Python API's callback: row dict -> None
        self.stop: Stop | None = None  # None while running
        self.stop_detail = ""
        self.events = []  # {"round", "worker", "event"}: a worker's failure
        self.recoveries = []  # {"round", "detected", "completed"}: wall-clock times (s) of each recovery
        if not cfg.quiet:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(total=cfg.iters, unit="round", disable=not sys.stderr.isatty(), leave=False,
                            dynamic_ncols=True)

    @property
    def bytes_up(self) -> int:
        """Cumulative message bytes of all workers."""
        return int(self.bytes_by_worker.sum())

    def set_stop(self, reason: Stop, detail: str = "") -> None:
        self.stop, self.stop_detail = reason, detail

    def start(self):
        if self.t0 is None:
            self.t0 = time.perf_counter() - self.offset

    def add_round(self, t: int, ids, sizes, down: int):
        """Count the bytes of round t: ``sizes`` of the messages of workers ``ids``, ``down`` sent to them."""
        self.bytes_by_worker[np.asarray(ids, dtype=np.int64)] += np.asarray(sizes, dtype=np.int64)
        self.bytes_down += down
        if t == 0:
            self.bytes_up_round0 = int(sum(sizes))

    def elapsed(self) -> float:
        return self.offset if self.t0 is None else time.perf_counter() - self.t0

    def event(self, t: int, worker: int, what: str) -> None:
        """Something that happened to a worker in round t (printed now, also with --quiet,
        and kept in ``events``)."""
        import sys

        self.events.append({"round": int(t), "worker": int(worker), "event": what})
        sys.stderr.write(f"psmpi: worker {worker} {what} in round {t}\n")
        sys.stderr.flush()

    def round_workers(self, t: int, n: int) -> None:
        """Round t's aggregate has n workers: a row of round t recorded before a failure in it says so."""
        if self.rows["iteration"] and self.rows["iteration"][-1] == t:
            self.rows["n_workers"][-1] = n

    def restore(self, ck):
        """Continue from a checkpoint's rows and counters."""
        self.events = list(ck.events)
        for k in self.rows:
            self.rows[k] = list(ck.metrics[k]) if k in ck.metrics else [self.n] * len(ck.metrics["iteration"])
        self.bytes_down, self.offset = ck.bytes_down, ck.elapsed
        self.opening_down = ck.bytes_down_opening
        self.bytes_by_worker[:] = ck.bytes_by_worker

    def should_eval(self, t: int) -> bool:
        return t % self.cfg.eval_every == 0 or t == self.cfg.iters

    def last_round(self) -> int:
        return int(self.rows["iteration"][-1]) if self.rows["iteration"] else 0

    def eval_row(self, t: int, loss: float, gns: float, samples, right, rows, x, n_workers: int) -> bool:
        """Record a row at x^t: f, ||grad f||^2, each worker's samples used so far, evaluation
        rows classified correctly (None: no classifier) and evaluation rows, the workers in the
        round's aggregate; True when the run should stop here (last round, tol, divergence)."""
        r = self.rows
        r["n_workers"].append(n_workers)
        if "train_accuracy" in r:
            r["train_accuracy"].append(sum(right) / sum(rows) if None not in right else np.nan)
        if "test_loss" in r:
            test_loss, test_acc = self.tester(x)
            r["test_loss"].append(test_loss)
            r["test_accuracy"].append(np.nan if test_acc is None else test_acc)
        r["bits_up_by_worker"].append(8.0 * self.bytes_by_worker)
        r["samples"].append(np.asarray(samples, np.int64))
        r["iteration"].append(t)
        r["grad_norm_sq"].append(gns)
        r["loss"].append(loss)
        r["bits_up_per_worker"].append(8.0 * self.bytes_up / self.n)
        r["bits_down_per_worker"].append(8.0 * self.bytes_down / self.n)
        r["bytes_up"].append(self.bytes_up)
        r["bytes_down"].append(self.bytes_down)
        r["wall_time"].append(self.elapsed())
        if self.on_eval is not None:
            self.on_eval({k: v[-1] for k, v in r.items()})
        if self.bar is not None:
            self.bar.n = t
            self.bar.set_postfix_str(f"|grad|^2={gns:.3e} up={self.bytes_up / 1e6:.2f}MB "
                                    f"down={self.bytes_down / 1e6:.2f}MB", refresh=True)
        if not np.isfinite(gns) or gns > DIVERGED * max(1.0, r["grad_norm_sq"][0]):
            self.set_stop(Stop.DIVERGED, f"diverged at round {t} (||grad f||^2 = {gns:.3e})")
            return True
        if gns <= self.cfg.tol:
            self.set_stop(Stop.TOL, f"||grad f||^2 <= tol at round {t}")
            return True
        if t == self.cfg.iters:
            self.set_stop(Stop.ITERS)
            return True
        return False

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def arrays(self) -> dict:
        arrays = {k: np.asarray(v, dtype=np.int64 if k in self.INTS else np.float64) for k, v in self.rows.items()}
        for k in ("bits_up_by_worker", "samples"):  # rows x n, also when there is no row yet
            arrays[k] = arrays[k].reshape(-1, self.n)
        return arrays


def make_result(cfg: TrainConfig, plan: Plan, consts: Constants, rec: Recorder, x, backend: str, mpi_library: str,
                dim: int, problem: str, timings: dict):
    from .. import __version__
    from ..results import Result

    config = cfg.to_dict()
    config.update(problem=problem, gamma_used=plan.hp.gamma, gamma_theory=plan.gamma_theory, L=consts.L,
                  L_tilde=consts.L_tilde, alpha=_maybe(lambda: plan.compressor.alpha),
                  omega=_maybe(lambda: plan.compressor.omega), dim=dim)
    stop = rec.stop or Stop.RUNNING
    attrs = {"psmpi_version": __version__, "backend": backend, "n_workers": cfg.workers, "mpi_library": mpi_library,
             "L": consts.L, "L_tilde": consts.L_tilde, "L_i": np.asarray(consts.L_i),
             "stop_message": rec.stop_detail, "timings": json.dumps(dict(timings, recoveries=rec.recoveries)),
             "events": json.dumps(rec.events)}
    return Result(rec.arrays(), np.array(x, dtype=np.float64), plan.hp.gamma, config, attrs, cfg.out, stop.value)


def _maybe(fn):
    try:
        return float(fn())
    except (NotImplementedError, AttributeError):
        return None


class Control:
    """Rank 0's decisions at the top of each round: checkpoint, stop on a signal,
    flush the output file now and then (so a killed job leaves a readable file)."""

    FLUSH_SECONDS = float(os.environ.get("PSMPI_FLUSH_SECONDS", "10"))

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.path = checkpoint_path(cfg.out) if cfg.out else None
        self.signal = None
        self.last_flush = time.monotonic()
        self.make_result = None  # set by the runtime: x -> Result so far
        self._old = {}

    def install(self, ignore=False):
        """Catch SIGTERM/SIGINT (Slurm's warning before the time limit)."""
        import signal

        def handler(signum, frame):
            if not ignore:
                self.signal = signal.Signals(signum).name

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def uninstall(self):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def action(self, t: int, start: int) -> int:
        from .driver import CHECKPOINT, CONTINUE, STOP

        if self.signal is not None:
            return STOP
        every = self.cfg.checkpoint_every
        if every and t > start and t % every == 0 and t < self.cfg.iters:
            return CHECKPOINT
        return CONTINUE

    def checkpoint(self, t, x, mstate, blobs, rec, alive):
        from .checkpoint import write_checkpoint

        write_checkpoint(self.path, self.cfg, t, x, mstate, blobs, rec, alive)

    def maybe_flush(self, x, force=False):
        if not self.cfg.extra.get("write", True):  # a Python API run that writes no file
            return
        if force or time.monotonic() - self.last_flush > self.FLUSH_SECONDS:
            from ..results import write_result

            write_result(self.cfg.out, self.make_result(x))
            self.last_flush = time.monotonic()

    def stop_message(self, t: int) -> str:
        from ..launch import launched

        note = " (under mpirun, Ctrl-C reaches the ranks as SIGTERM)" if self.signal == "SIGTERM" and launched() else ""
        return (f"stopped by {self.signal} at round {t}{note}; checkpoint written to {self.path}; "
                f"continue with --resume {self.path}")
