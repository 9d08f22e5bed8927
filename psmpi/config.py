"""Run configuration: defaults, YAML loading, validation with one-line errors."""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field

import numpy as np


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line for the user."""


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
    eta: float = 0.1
    zeta: float = 1.0
    p: float | None = None
    shift_step: float | None = None
    batch_size: int | str | None = None  # None: 1 for stochastic methods, 'full' otherwise
    init_batch_size: int | None = None  # None: the batch size
    iters: int = 1000
    tol: float = 0.0
    x0: str = "zeros"
    seed: int = 0
    eval_every: int | None = None  # None: about 200 rows per run
    out: str | None = None  # None: results/<method>_<dataset>_<compressor>.h5
    backend: str = "auto"
    workers: int = 20
    device: str = "cpu"
    cuda_aware: bool = False  # --device gpu: MPI moves device buffers itself (a CUDA-aware MPI build)
    value_dtype: str = "float32"
    quiet: bool = False
    checkpoint_every: int | None = None  # rounds between checkpoints (None: none)
    resume: str | None = None  # a checkpoint file, or 'auto' for OUT.ckpt
    label: str | None = None  # legend label for plots (default: made from the config)
    sweep: dict | None = None  # a grid for `psmpi sweep`; `psmpi train` ignores it
    extra: dict = field(default_factory=dict)  # reserved for the Python API

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d


FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]
BACKENDS = ("auto", "serial", "mpi")


def default_compressor(method) -> str:
    return {"identity": "identity", "unbiased": "randk:1"}.get(method.compressors, "topk:1")


def from_mapping(data: dict, source: str = "config") -> TrainConfig:
    """A TrainConfig from a dict (YAML keys may use '-' or '_')."""
    kwargs = {}
    for key, value in (data or {}).items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            near = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean '{near[0].replace('_', '-')}'?)" if near else ""
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
        kwargs[name] = value
    return TrainConfig(**kwargs)


def load_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option: value")
    return data


def batch_or_none(v):
    """A resolved batch size as the methods take it: None means exact gradients."""
    return None if v == "full" else int(v)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _number(name: str, v, what: str = "a number") -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"--{_flag(name)} must be {what} (got {v!r})") from None


def _positive_int(name, v, allow_full=False):
    if allow_full and str(v).lower() == "full":
        return None
    try:
        iv = int(v)
        if iv != float(v) or iv < 1:
            raise ValueError
    except (TypeError, ValueError):
        full = " or full" if allow_full else ""
        raise ConfigError(f"--{_flag(name)} must be a positive integer{full} (got {v!r})") from None
    return iv


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check and normalise every field; raise ConfigError with one line."""
    from .methods import REGISTRY, get_method

    cfg.method = str(cfg.method).lower()
    if cfg.method not in REGISTRY:
        raise ConfigError(f"unknown method '{cfg.method}'; valid: {', '.join(REGISTRY)}")
    method = get_method(cfg.method)
    if cfg.compressor is None:
        cfg.compressor = default_compressor(method)
    from .compressors import REGISTRY as CREG

    cname = str(cfg.compressor).partition(":")[0].lower()
    if cname not in CREG:
        raise ConfigError(f"unknown compressor '{cname}'; valid: {', '.join(sorted(CREG))}")
    if cfg.problem is not None and cfg.problem not in ("logreg", "softmax", "quadratic"):
        raise ConfigError(f"unknown problem '{cfg.problem}'; valid: logreg, softmax, quadratic")
    from .data import DataError, check_split

    try:
        check_split(cfg.split)
    except DataError as e:
        raise ConfigError(str(e)) from None
    cfg.iters = _positive_int("iters", cfg.iters) if cfg.iters != 0 else 0
    cfg.workers = _positive_int("workers", cfg.workers)
    if cfg.batch_size is None:
        cfg.batch_size = 1 if method.stochastic else "full"
    bs = _positive_int("batch_size", cfg.batch_size, allow_full=True)
    cfg.batch_size = "full" if bs is None else bs
    if cfg.init_batch_size is None:
        cfg.init_batch_size = cfg.batch_size
    ibs = _positive_int("init_batch_size", cfg.init_batch_size, allow_full=True)
    cfg.init_batch_size = "full" if ibs is None else ibs
    if cfg.eval_every is None:
        cfg.eval_every = max(1, cfg.iters // 200)
    cfg.eval_every = _positive_int("eval_every", cfg.eval_every)
    for name in ("eta", "p", "shift_step"):
        if getattr(cfg, name) is not None:
            v = _number(name, getattr(cfg, name))
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"--{_flag(name)} must be in (0, 1] (got {v})")
            setattr(cfg, name, v)
    for name in ("lam", "zeta", "tol"):
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
    if not isinstance(cfg.cuda_aware, bool):
        raise ConfigError(f"cuda_aware must be true or false (got {cfg.cuda_aware!r})")
    if cfg.cuda_aware and cfg.device != "gpu":
        raise ConfigError("--cuda-aware applies to --device gpu only")
    if cfg.value_dtype not in ("float32", "float64"):
        raise ConfigError(f"--value-dtype must be float32 or float64 (got {cfg.value_dtype!r})")
    if str(cfg.x0) not in ("zeros", "ones", "normal") and not str(cfg.x0).endswith(".npy"):
        raise ConfigError(f"--x0 must be zeros, ones, normal or a .npy file (got {cfg.x0!r})")
    try:
        cfg.seed = int(cfg.seed)
        if cfg.seed < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"--seed must be a non-negative integer (got {cfg.seed!r})") from None
    if cfg.checkpoint_every is not None:
        cfg.checkpoint_every = _positive_int("checkpoint_every", cfg.checkpoint_every)
    if cfg.out is None:
        ds = re.sub(r"[^A-Za-z0-9.-]+", "-", os.path.splitext(os.path.basename(str(cfg.dataset)))[0])
        comp = re.sub(r"[^A-Za-z0-9.-]+", "", str(cfg.compressor).replace("%", "pct"))
        cfg.out = os.path.join("results", f"{cfg.method}_{ds}_{comp}.h5")
    if cfg.resume is not None:
        from .runtime.checkpoint import default_path

        if cfg.resume in ("auto", True):
            cfg.resume = default_path(cfg.out)
        if not os.path.exists(cfg.resume):
            raise ConfigError(f"cannot resume: no checkpoint at {cfg.resume}")
    from .parallel import threads

    threads()  # a bad PSMPI_THREADS fails here, before any work
    return cfg


def check_writable(path: str) -> None:
    """ConfigError unless ``path`` can be written (its folder made if missing)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK) or \
            (os.path.exists(folder) and not os.access(folder, os.W_OK | os.X_OK)) or \
            (os.path.exists(path) and (os.path.isdir(path) or not os.access(path, os.W_OK))):
        raise ConfigError(f"cannot write the output file {path}")
