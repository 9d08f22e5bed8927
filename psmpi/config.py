"""Run configuration: the fields every run has, YAML loading, field validation.

This module checks fields only (types, ranges, paths).  What depends on the
registries (method names, compressor specs, the hyper-parameters a method
declares) is checked by :func:`psmpi.methods.check_config` and
:func:`psmpi.compressors.check_spec`; :func:`psmpi.api.make_config` runs all
of it in order.  A method's hyper-parameters (``eta``, ``zeta``, ``p``,
``batch_size``, ...) live in ``TrainConfig.params``; they are top-level keys in
YAML and in the ``config`` attribute of the output, like every other option.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from . import launch
from .errors import ConfigError, did_you_mean

__all__ = ["ConfigError", "TrainConfig", "FIELDS", "from_mapping", "load_yaml", "validate", "check_writable",
           "default_out"]


@dataclass
class TrainConfig:
    method: str = "ef21"
    compressor: str | None = None  # None: the method's default
    problem: str | None = None  # None: logreg for 2 classes, softmax otherwise
    dataset: str = "breast-cancer"
    split: str = "contiguous"
    lam: float = 0.1
    gamma: float | str = "theory"
    gamma_factor: float = 1.0
    iters: int = 1000
    tol: float = 0.0
    x0: str | None = None  # None: zeros, or a neural network's seeded initialisation
    seed: int = 0
    eval_every: int | None = None  # None: about 200 rows per run (20 for a neural network)
    eval_rows: int | str | None = None  # rows of each evaluation, or 'full'; None: see resolve_eval_rows
    test_dataset: str | None = None  # a held-out test set (name or file): adds test_loss, test_accuracy
    test_fraction: float | None = None  # or a seeded fraction of the data held out as the test set
    out: str | None = None  # None: results/<method>_<dataset>_<compressor>.h5, numbered if taken
    overwrite: bool = False  # replace an existing output file
    backend: str = "auto"
    workers: int | None = None  # None: 20 in the serial runtime, one per worker rank under MPI
    device: str = "cpu"
    cuda_aware: bool = False  # --device gpu: MPI moves device buffers itself (a CUDA-aware MPI build)
    value_dtype: str = "float32"
    quiet: bool = False
    checkpoint_every: int | None = None  # rounds between checkpoints (None: none)
    resume: str | None = None  # a checkpoint file, or 'auto' for OUT.ckpt
    on_worker_failure: str = "abort"  # or 'continue' with the survivors (MPI with ULFM: mpirun --with-ft ulfm)
    label: str | None = None  # legend label for plots (default: made from the config)
    sweep: dict | None = None  # a grid for `psmpi sweep`; `psmpi train` ignores it
    params: dict = field(default_factory=dict)  # the method's hyper-parameters (declared by the method)
    extra: dict = field(default_factory=dict)  # reserved for the Python API

    def to_dict(self) -> dict:
        """Every option as one flat mapping (the method's parameters as top-level keys)."""
        d = {f: getattr(self, f) for f in FIELDS}
        d.update(self.params)
        return d


FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("params", "extra")]
BACKENDS = ("auto", "serial", "mpi")
FAILURE_POLICIES = ("abort", "continue")
DEFAULT_WORKERS = 20


def _flag(name: str) -> str:
    return name.replace("_", "-")


def from_mapping(data: dict, source: str = "config", params=(), lines: dict | None = None) -> TrainConfig:
    """A TrainConfig from a dict (keys may use '-' or '_'); ``params`` are the
    hyper-parameter names some method declares.  Every unknown key is reported
    in one line, with its line number when ``lines`` (key -> line) is given."""
    kwargs, hyper, unknown = {}, {}, []
    known = FIELDS + list(params)
    for key, value in (data or {}).items():
        name = str(key).replace("-", "_")
        if name in FIELDS:
            kwargs[name] = value
        elif name in params:
            hyper[name] = value
        else:
            hint = did_you_mean(name, known, _flag)
            where = f" (line {lines[key]})" if lines and key in lines else ""
            unknown.append(f"'{key}'{where}{hint}")
    if unknown:
        raise ConfigError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    return TrainConfig(params=hyper, **kwargs)


def load_yaml(path: str, with_lines: bool = False):
    """The mapping in a YAML file (errors name the line); with ``with_lines``
    also {key: line number} of its top-level keys."""
    import yaml

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option: value")
    if not with_lines:
        return data
    lines = {k.value: k.start_mark.line + 1 for k, _ in getattr(node, "value", ())
             if hasattr(k, "value") and isinstance(k.value, str)}
    return data, lines


def _number(name: str, v, what: str = "a number") -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"--{_flag(name)} must be {what} (got {v!r})") from None


def _positive_int(name, v):
    try:
        iv = int(v)
        if iv != float(v) or iv < 1:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"--{_flag(name)} must be a positive integer (got {v!r})") from None
    return iv


def _bool(name, v) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be true or false (got {v!r})")
    return v


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check and normalise the fields (not the method or compressor: see the
    module docstring); raise ConfigError with one line."""
    from .data import DataError, check_split

    cfg.method = str(cfg.method).lower()
    from .problems import NN_MODELS, PROBLEMS, is_nn_problem

    if cfg.problem is not None and cfg.problem not in PROBLEMS and not is_nn_problem(cfg.problem):
        raise ConfigError(f"unknown problem '{cfg.problem}'; valid: {', '.join(PROBLEMS + NN_MODELS)}, "
                          f"or module:factory for your own torch.nn.Module")
    try:
        check_split(cfg.split)
    except DataError as e:
        raise ConfigError(str(e)) from None
    cfg.iters = _positive_int("iters", cfg.iters)
    if cfg.workers is not None:
        cfg.workers = _positive_int("workers", cfg.workers)
    nn = is_nn_problem(cfg.problem)
    if cfg.eval_every is None:
        cfg.eval_every = max(1, cfg.iters // (NN_EVALS if nn else EVALS))
    cfg.eval_every = _positive_int("eval_every", cfg.eval_every)
    cfg.eval_rows = resolve_eval_rows(cfg.eval_rows, nn)
    if cfg.test_fraction is not None:
        cfg.test_fraction = _number("test_fraction", cfg.test_fraction)
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction must be in (0, 1) (got {cfg.test_fraction})")
        if cfg.test_dataset is not None:
            raise ConfigError("give --test-dataset or --test-fraction, not both")
    for name in ("lam", "tol"):
        v = _number(name, getattr(cfg, name))
        if v < 0 or not np.isfinite(v):
            raise ConfigError(f"--{name} must be finite and >= 0 (got {v})")
        setattr(cfg, name, v)
    if str(cfg.gamma).lower() == "theory":
        cfg.gamma = "theory"
    else:
        cfg.gamma = _number("gamma", cfg.gamma, "a positive number or 'theory'")
        if not (cfg.gamma > 0 and np.isfinite(cfg.gamma)):
            raise ConfigError(f"--gamma must be positive (got {cfg.gamma})")
    cfg.gamma_factor = _number("gamma_factor", cfg.gamma_factor, "a positive number")
    if not (cfg.gamma_factor > 0 and np.isfinite(cfg.gamma_factor)):
        raise ConfigError(f"--gamma-factor must be positive (got {cfg.gamma_factor})")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{cfg.backend}'; valid: {', '.join(BACKENDS)}")
    if cfg.device not in ("cpu", "gpu"):
        raise ConfigError(f"unknown device '{cfg.device}'; valid: cpu, gpu")
    if cfg.device == "gpu":
        from .backend import emulating, has_gpu

        if not (has_gpu() or emulating()):
            raise ConfigError("--device gpu needs CuPy and a CUDA device (pip install 'psmpi[gpu]'); "
                              "`psmpi info` shows what was found")
    cfg.cuda_aware = _bool("cuda_aware", cfg.cuda_aware)
    cfg.overwrite = _bool("overwrite", cfg.overwrite)
    cfg.quiet = _bool("quiet", cfg.quiet)
    if cfg.cuda_aware and cfg.device != "gpu":
        raise ConfigError("--cuda-aware applies to --device gpu only")
    if cfg.on_worker_failure not in FAILURE_POLICIES:
        raise ConfigError(f"--on-worker-failure must be abort or continue (got {cfg.on_worker_failure!r})")
    if cfg.value_dtype not in ("float32", "float64"):
        raise ConfigError(f"--value-dtype must be float32 or float64 (got {cfg.value_dtype!r})")
    if cfg.x0 is not None and str(cfg.x0) not in ("zeros", "ones", "normal", "init") and \
            not str(cfg.x0).endswith(".npy"):
        raise ConfigError(f"--x0 must be zeros, ones, normal, init (a neural network's initialisation) or a .npy "
                          f"file (got {cfg.x0!r})")
    try:
        cfg.seed = int(cfg.seed)
        if cfg.seed < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"--seed must be a non-negative integer (got {cfg.seed!r})") from None
    if cfg.checkpoint_every is not None:
        cfg.checkpoint_every = _positive_int("checkpoint_every", cfg.checkpoint_every)
    if cfg.label is not None:
        cfg.label = str(cfg.label)
    if cfg.resume is not None and cfg.resume not in ("auto", True) and not os.path.exists(cfg.resume):
        raise ConfigError(f"cannot resume: no checkpoint at {cfg.resume}")
    if launch.launched() and launch.mpi_world_size() == 1 and cfg.backend != "serial":
        raise ConfigError("mpirun -n 1 starts no worker rank (rank 0 is the master): launch N+1 ranks for N "
                          "workers, or run without mpirun for the serial runtime")
    from .parallel import threads

    threads()  # a bad PSMPI_THREADS fails here, before any work
    return cfg


# Evaluation defaults: --eval-every is iters/EVALS (iters/NN_EVALS for a neural network, whose
# evaluation costs a forward and backward pass over NN_EVAL_ROWS rows); BENCHMARKS.md measures
# the share of the run time evaluations take with these.
EVALS, NN_EVALS, NN_EVAL_ROWS = 200, 20, 1024


def resolve_eval_rows(value, nn: bool):
    """--eval-rows: a positive number of rows or 'full'; unset, NN_EVAL_ROWS for a neural
    network (its exact full-data gradient is costly) and 'full' for the other problems."""
    if value is None:
        return NN_EVAL_ROWS if nn else "full"
    if str(value).strip().lower() == "full":
        return "full"
    try:
        return _positive_int("eval_rows", value)
    except ConfigError:
        raise ConfigError(f"--eval-rows must be a positive number of rows or full (got {value!r})") from None


# Options that change neither the iterates nor the metrics recorded (backend: the serial and MPI
# runtimes give the same iterates bit for bit; cuda_aware only changes how x reaches the device;
# on_worker_failure only matters once a worker has died).
# A sweep reuses an output, and a checkpoint resumes, across changes of these alone.
ITERATE_NEUTRAL = frozenset({"out", "overwrite", "quiet", "label", "resume", "checkpoint_every", "sweep", "backend",
                             "cuda_aware", "on_worker_failure"})


def config_diff(saved: dict, now: dict, ignore=ITERATE_NEUTRAL, skip_unset: bool = False) -> list:
    """[(key, saved value, current value)] of the options of ``now`` (in its order: the
    run's fields, then the method's parameters) that differ in ``saved``, except those
    in ``ignore``; with ``skip_unset`` an option ``now`` leaves unset (None) is not compared."""
    return [(k, saved.get(k), v) for k, v in now.items()
            if k not in ignore and not (skip_unset and v is None) and saved.get(k) != v]


def checkpoint_path(out: str) -> str:
    """The checkpoint of the run whose output is ``out``."""
    return f"{out}.ckpt"


def _default_names(cfg: TrainConfig):
    """results/METHOD_DATASET_COMPRESSOR.h5, then the same with _2, _3, ..."""
    import itertools
    import re

    ds = re.sub(r"[^A-Za-z0-9.-]+", "-", os.path.splitext(os.path.basename(str(cfg.dataset)))[0])
    comp = re.sub(r"[^A-Za-z0-9.-]+", "", str(cfg.compressor).replace("%", "pct"))
    stem = os.path.join("results", f"{cfg.method}_{ds}_{comp}")
    yield f"{stem}.h5"
    for k in itertools.count(2):
        yield f"{stem}_{k}.h5"


def default_out(cfg: TrainConfig) -> str:
    """The first default name with neither an output nor a checkpoint: a
    default name never replaces an earlier run's files."""
    return next(p for p in _default_names(cfg) if not (os.path.exists(p) or os.path.exists(checkpoint_path(p))))


def _last_default_checkpoint(cfg: TrainConfig) -> str | None:
    """The newest default-named output that has a checkpoint (what a bare --resume continues)."""
    found = None
    for p in _default_names(cfg):
        if not (os.path.exists(p) or os.path.exists(checkpoint_path(p))):
            return found
        if os.path.exists(checkpoint_path(p)):
            found = p


def resolve_out(cfg: TrainConfig) -> None:
    """Fill the default output name and the checkpoint to resume from, and
    refuse to replace an existing file without --overwrite."""

    if cfg.out is None:
        resumed = _last_default_checkpoint(cfg) if cfg.resume in ("auto", True) else None
        cfg.out = resumed or default_out(cfg)
    elif os.path.exists(cfg.out) and not (cfg.overwrite or cfg.resume is not None):
        raise ConfigError(f"{cfg.out} exists; pass --overwrite to replace it, or choose another --out")
    if cfg.resume in ("auto", True):
        cfg.resume = checkpoint_path(cfg.out)
        if not os.path.exists(cfg.resume):
            raise ConfigError(f"cannot resume: no checkpoint at {cfg.resume}")


def check_writable(path: str) -> None:
    """ConfigError unless a file can really be created next to ``path`` (its
    folder is made if missing): permission bits alone say nothing for root."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ConfigError(f"cannot write the output file {path}: it is a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".psmpi-probe-"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write the output file {path}: {e.strerror or e}") from None
