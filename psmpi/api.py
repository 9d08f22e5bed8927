"""The Python API: ``psmpi.train(config, problems=None) -> Result``."""
from __future__ import annotations

from .config import TrainConfig, from_mapping, validate
from .launch import mpi_world_size


def resolve_backend(cfg: TrainConfig) -> str:
    if cfg.backend == "auto":
        return "mpi" if mpi_world_size() > 1 else "serial"
    return cfg.backend


def train(config=None, problems=None, write: bool | None = None, **overrides):
    """Run one training run and return a :class:`psmpi.results.Result`.

    ``config`` is a TrainConfig, a dict of options (CLI names with '_' or '-'),
    or None; keyword overrides win.  ``problems`` is an optional list of
    :class:`psmpi.problems.LocalProblem`, one per worker (e.g. ``Quadratic``),
    which replaces the dataset (serial backend).  The HDF5 output is written
    when ``write`` is True, or when it is None and ``out`` was given.
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
    cfg = validate(from_mapping(data, "train()"))
    will_write = bool(write or (write is None and explicit_out))
    cfg.extra["write"] = will_write  # no periodic flushes to a file the caller did not ask for
    backend = resolve_backend(cfg)
    if backend == "mpi":
        if problems is not None:
            from .config import ConfigError

            raise ConfigError("user problems run on the serial backend")
        from .runtime.mpi import run_mpi

        res = run_mpi(cfg)
    else:
        from .runtime.serial import run_serial

        res = run_serial(cfg, problems)
    if res is not None and will_write:
        from .results import write_result

        write_result(cfg.out, res)
    return res
