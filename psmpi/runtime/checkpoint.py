"""Checkpoints: the whole state of a run at the start of a round, written atomically.

A checkpoint taken at the start of round t holds x^t, the master state, every
worker's state and both of its random streams, the metrics rows recorded so far
and the byte counters.  Resuming from it replays rounds t, t+1, ... exactly as
the uninterrupted run would (bit for bit; only ``wall_time`` differs).

Worker states travel (under MPI) and are stored as ``.npz`` blobs of plain
arrays (no pickle): the state's dataclass name, its array fields, the state a
per-worker compressor keeps (PowerSGD's Q) and the bit-generator states as
JSON.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os

import numpy as np

from ..backend import replace_arrays
from ..config import ITERATE_NEUTRAL, config_diff
from ..errors import ConfigError

# keys of the config that may change between a checkpoint and its resumption
RESUMABLE_CHANGES = ITERATE_NEUTRAL | {"iters", "eval_every", "tol"}


def _json_array(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def pack_state(obj, named=None, **extra) -> bytes:
    """A dataclass of arrays (and None) as npz bytes; ``named``: more arrays by name
    (a compressor's state); ``extra`` are JSON-able values.  ``obj`` None (no state
    yet: a checkpoint before the first round) is kept as None."""
    arrays = {"__class__": _json_array("" if obj is None else f"{type(obj).__module__}:{type(obj).__qualname__}")}
    for f in dataclasses.fields(obj) if obj is not None else ():
        v = getattr(obj, f.name)
        if v is not None:
            arrays[f"f.{f.name}"] = np.asarray(v)
    for k, v in (named or {}).items():
        arrays[f"a.{k}"] = np.asarray(v)
    for k, v in extra.items():
        arrays[f"x.{k}"] = _json_array(v)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack_state(blob: bytes):
    """-> (state object, extra dict); the named arrays are ``extra['named']``."""
    with np.load(io.BytesIO(bytes(blob)), allow_pickle=False) as z:
        name = json.loads(z["__class__"].tobytes())
        extra = {k[2:]: json.loads(z[k].tobytes()) for k in z.files if k.startswith("x.")}
        extra["named"] = {k[2:]: z[k].copy() for k in z.files if k.startswith("a.")}
        if not name:
            return None, extra
        module, qual = name.split(":")
        cls = getattr(importlib.import_module(module), qual)
        fields = {k[2:]: z[k].copy() for k in z.files if k.startswith("f.")}
    fields = {k: (v.item() if v.ndim == 0 else v) for k, v in fields.items()}
    return cls(**fields), extra


def pack_worker(ctx, state) -> bytes:
    if not ctx.device.on_host and state is not None:
        state = replace_arrays(state, ctx.device.to_host)
    return pack_state(state, ctx.compressor.state_arrays(), rng=ctx.rng.bit_generator.state,
                      common=ctx.common.bit_generator.state, samples=ctx.samples)


def restore_worker(ctx, blob: bytes):
    state, extra = unpack_state(blob)
    ctx.compressor.restore_arrays(extra["named"])
    ctx.rng.bit_generator.state = extra["rng"]
    ctx.common.bit_generator.state = extra["common"]
    ctx.samples = extra["samples"]
    return state if ctx.device.on_host or state is None else replace_arrays(state, ctx.device.asarray)


@dataclasses.dataclass
class Checkpoint:
    round: int
    x: np.ndarray
    master: object
    worker_blobs: list
    metrics: dict
    bytes_down: int
    elapsed: float
    bytes_by_worker: np.ndarray
    alive: list  # the workers in the aggregate (fewer than the run's after a failure)
    events: list
    bytes_down_opening: int = 0  # what the round's opening broadcast (a downlink method does not send it again)


def write_checkpoint(path, cfg, t, x, mstate, worker_blobs, rec, alive):
    import h5py  # here, not at the top: worker ranks import this module but write no file

    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["round"] = t
            f.attrs["config"] = json.dumps(cfg.to_dict(), sort_keys=True)
            f.attrs["bytes_down"] = rec.bytes_down
            f.attrs["bytes_down_opening"] = rec.opening_down
            f.attrs["elapsed"] = rec.elapsed()
            f.attrs["alive"] = json.dumps([int(i) for i in alive])  # the blobs' workers, in order
            f.attrs["events"] = json.dumps(rec.events)
            f.create_dataset("x", data=x)
            f.create_dataset("bytes_by_worker", data=rec.bytes_by_worker)
            f.create_dataset("master", data=np.frombuffer(pack_state(mstate), dtype=np.uint8))
            g = f.create_group("workers")
            for i, blob in enumerate(worker_blobs):
                g.create_dataset(str(i), data=np.frombuffer(blob, dtype=np.uint8))
            m = f.create_group("metrics")
            for k, v in rec.arrays().items():
                m.create_dataset(k, data=v)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path, cfg) -> Checkpoint:
    """Read and check compatibility with ``cfg``; ConfigError (one line) if not."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ConfigError(f"cannot resume: no readable checkpoint at {path}") from None
    with f:
        saved = json.loads(f.attrs["config"])
        now = cfg.to_dict()
        if saved.get("workers") != now.get("workers"):
            raise ConfigError(f"cannot resume {path}: it has {saved.get('workers')} workers, "
                              f"this run has {now.get('workers')}")
        diff = config_diff(saved, now, RESUMABLE_CHANGES)
        if diff:
            k, was, is_ = diff[0]
            raise ConfigError(f"cannot resume {path}: option '{k}' was {was!r}, now {is_!r}")
        if int(f.attrs["round"]) > cfg.iters:
            raise ConfigError(f"cannot resume {path}: it was taken at round {int(f.attrs['round'])}, past "
                              f"--iters {cfg.iters}")
        master, _ = unpack_state(f["master"][()].tobytes())
        blobs = [f["workers"][str(i)][()].tobytes() for i in range(len(f["workers"]))]
        metrics = {k: f["metrics"][k][()] for k in f["metrics"]}
        return Checkpoint(int(f.attrs["round"]), f["x"][()], master, blobs, metrics, int(f.attrs["bytes_down"]),
                          float(f.attrs["elapsed"]), f["bytes_by_worker"][()], checkpoint_alive(f, saved["workers"]),
                          json.loads(f.attrs.get("events", "[]")), int(f.attrs.get("bytes_down_opening", 0)))


def checkpoint_alive(f, n: int) -> list:
    """The workers a checkpoint holds (all n unless some had failed before it was taken)."""
    return json.loads(f.attrs["alive"]) if "alive" in f.attrs else list(range(n))
