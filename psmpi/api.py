"""The Python API: ``psmpi.train(config, problems=None) -> Result``, and
:func:`make_config`, the one place a run configuration is built and checked."""
from __future__ import annotations

from .config import TrainConfig, from_mapping, validate
from .errors import ConfigError
from .launch import mpi_world_size


def make_config(data: dict, source: str = "options", lines: dict | None = None) -> TrainConfig:
    """A checked TrainConfig from a mapping of options (CLI or YAML names):
    the fields (psmpi.config), then what needs the registries (the method, the
    compressor, the method's declared hyper-parameters)."""
    from .methods import all_params, check_config

    cfg = validate(from_mapping(data, source, all_params(), lines))
    check_config(cfg)
    return cfg


def resolve_backend(cfg: TrainConfig) -> str:
    if cfg.backend == "auto":
        return "mpi" if mpi_world_size() > 1 else "serial"
    return cfg.backend


def train(config=None, problems=None, write: bool | None = None, on_eval=None, **overrides):
    """Run one training run and return a :class:`psmpi.results.Result`.

    ``config`` is a TrainConfig, a dict of options (CLI names with '_' or '-'),
    or None; keyword overrides win.  ``problems`` is an optional list of
    :class:`psmpi.problems.LocalProblem`, one per worker (e.g. ``Quadratic``),
    which replaces the dataset (serial backend).  The HDF5 output is written
    when ``write`` is True, or when it is None and ``out`` was given; then
    ``res.out`` names the file, else it is None.  ``on_eval(row)`` is called
    on the master after each evaluation with that row of the metrics (a dict:
    ``iteration``, ``grad_norm_sq``, ``loss``, ``bits_up_per_worker``, ...).
    """
    if isinstance(config, TrainConfig):
        data = config.to_dict()
    else:
        data = dict(config or {})
    data.update(overrides)
    explicit_out = data.get("out") is not None
    if problems is not None:
        data["workers"] = len(problems)
        data.setdefault("dataset", "user-problems")
    cfg = make_config(data, "train()")
    if on_eval is not None:
        cfg.extra["on_eval"] = on_eval
    return run(cfg, problems, bool(write or (write is None and explicit_out)))


def run(cfg: TrainConfig, problems=None, write: bool = True):
    """Run a checked configuration (:func:`make_config`) on the backend it names and,
    with ``write``, write its output file (checked before any work); -> the Result,
    None on an MPI worker rank.  What ``psmpi train`` and :func:`train` share."""
    from .config import check_writable, resolve_out

    cfg.extra["write"] = write  # no periodic flushes to a file the caller did not ask for
    if write:
        resolve_out(cfg)
        check_writable(cfg.out)
    elif cfg.resume is not None or cfg.checkpoint_every:
        resolve_out(cfg)
    backend = resolve_backend(cfg)
    if backend != "mpi" and cfg.on_worker_failure == "continue":
        raise ConfigError("--on-worker-failure continue applies to the MPI runtime: "
                          "mpirun --with-ft ulfm -n N+1 psmpi train ...")
    if backend == "mpi":
        if problems is not None:
            raise ConfigError("user problems run on the serial backend")
        from .runtime.mpi import run_mpi

        res = run_mpi(cfg)
    else:
        from .runtime.serial import run_serial

        res = run_serial(cfg, problems)
    if res is not None:
        if write:
            save_result(cfg.out, res)
        else:
            res.out = None
    return res


class ResultNotWritten(ConfigError):
    """The output file could not be written at the end; the result went elsewhere (the message says where)."""


def save_result(path: str, res) -> None:
    """Write the output file; if that fails at the end of a run, keep the result
    in the temporary folder instead and raise ResultNotWritten naming it."""
    import os
    import tempfile

    from .results import write_result

    try:
        write_result(path, res)
        res.out = path
    except OSError as e:
        safe = os.path.join(tempfile.gettempdir(), f"psmpi-{os.getpid()}-{os.path.basename(path) or 'result.h5'}")
        write_result(safe, res)
        res.out = safe
        raise ResultNotWritten(f"cannot write {path} ({e.strerror or e}); the result was saved to {safe}") from None
