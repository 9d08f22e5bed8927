"""HDF5 run outputs: ``/metrics/<name>``, ``/x`` and root attributes (SPEC.md)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    metrics: dict
    x: np.ndarray
    gamma: float
    config: dict
    attrs: dict = field(default_factory=dict)
    out: str | None = None
    stop_reason: str = "iters"

    @property
    def diverged(self) -> bool:
        return self.stop_reason.startswith("diverged")


def write_result(path: str, res: Result) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    import h5py  # here, not at the top: an MPI worker imports this module but writes nothing

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("metrics")
            for k, v in res.metrics.items():
                g.create_dataset(k, data=v)
            f.create_dataset("x", data=res.x)
            f.attrs["config"] = json.dumps(res.config, sort_keys=True)
            f.attrs["gamma"] = res.gamma
            f.attrs["stop_reason"] = res.stop_reason
            for k, v in res.attrs.items():
                f.attrs[k] = v
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_result(path: str) -> Result:
    import h5py

    with h5py.File(path, "r") as f:
        metrics = {k: f["metrics"][k][()] for k in f["metrics"]}
        attrs = {k: (v.item() if getattr(v, "size", 0) == 1 else v) for k, v in f.attrs.items()}
        x = f["x"][()]
    cfg = json.loads(attrs.pop("config"))
    return Result(metrics, x, float(attrs.pop("gamma")), cfg, attrs, path, str(attrs.pop("stop_reason", "iters")))
