"""What a compressor returns: wire-exact payloads.

A payload holds exactly the numbers that travel on the wire (values already
rounded to the wire dtype), so the worker that built it and the master that
decodes it from bytes see the same vector, bit for bit.  Every payload can add
itself (times a weight) into a dense float64 vector, touching only what it
carries: the master aggregates by doing exactly that, in worker order, in both
runtimes, and worker states (EF14's error, DIANA's shift) update the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import device_of, is_device_array, replace_arrays, to_numpy


def _like(out, a):
    """``a`` on the device of ``out`` (a host payload applied to a device state)."""
    if isinstance(a, np.ndarray) and a.ndim and is_device_array(out) and not is_device_array(a):
        return device_of(out).asarray(a)
    return a


class Payload:
    """Base class: a compressed vector of dimension ``d``, plus one flag bit
    whose meaning the method defines."""

    d: int
    flag: bool

    def add_to(self, out: np.ndarray, weight: float = 1.0) -> None:
        """out += weight * C(x), in float64."""
        v = _like(out, self.dense_values())
        if weight != 1.0:
            v = np.float64(weight) * v
        out += v

    def dense_values(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dense(self, like=None) -> np.ndarray:
        """C(x) as a float64 vector, on the device of ``like`` when given."""
        out = np.zeros(self.d) if like is None else np.zeros_like(like, dtype=np.float64)
        self.add_to(out)
        return out


def to_host(p: Payload, move=to_numpy) -> Payload:
    """The payload with its arrays (and 0-d scalars) copied from the device to the host
    by ``move``: the only thing a worker on a GPU sends across, the message itself."""
    def host(v):
        if not is_device_array(v):
            return v
        v = move(v)
        return v[()] if v.ndim == 0 else v

    return replace_arrays(p, host)


@dataclass(frozen=True)
class Dense(Payload):
    values: np.ndarray
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    @property
    def d(self) -> int:
        return self.values.shape[0]

    def dense_values(self):
        return self.values


@dataclass(frozen=True)
class Sparse(Payload):
    """Coordinates ``indices`` (strictly increasing) carry ``values``."""

    d: int
    indices: np.ndarray
    values: np.ndarray
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    def add_to(self, out, weight=1.0):
        if type(out) is np.ndarray:  # on the host (the common case, without the device checks)
            v, idx = self.values, self.indices
        else:
            v, idx = _like(out, self.values), _like(out, self.indices)
        if weight != 1.0:
            v = np.float64(weight) * v
        out[idx] += v


@dataclass(frozen=True)
class Empty(Payload):
    """Nothing changed (a skipped round of LAG/CLAG): the zero vector."""

    d: int
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    def add_to(self, out, weight=1.0):
        pass


@dataclass(frozen=True)
class Signs(Payload):
    """``scale * s`` with ``s_j = -1`` where ``negative`` else ``+1``."""

    d: int
    scale: np.floating
    negative: np.ndarray
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    def dense_values(self):
        s = np.float64(self.scale)
        return np.where(self.negative, -s, s)


@dataclass(frozen=True)
class Natural(Payload):
    """``scale * (-1)^negative * 2^exponent``; ``exponent == ZERO`` means 0."""

    d: int
    scale: np.floating
    negative: np.ndarray
    exponents: np.ndarray  # int16
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)
    ZERO = -32768

    def dense_values(self):
        mag = np.ldexp(1.0, self.exponents.astype(np.int32))
        mag[self.exponents == self.ZERO] = 0.0
        mag *= np.float64(self.scale)
        return np.where(self.negative, -mag, mag)


MAX_QSGD_LEVELS = 65535  # s of a quantized payload: levels fit uint16


@dataclass(frozen=True)
class Quantized(Payload):
    """Random dithering: ``norm * (-1)^negative * levels / s``."""

    d: int
    norm: np.floating
    s: int
    negative: np.ndarray
    levels: np.ndarray  # uint8/uint16, in [0, s]
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    def dense_values(self):
        mag = self.levels * (np.float64(self.norm) / self.s)
        return np.where(self.negative, -mag, mag)


MAX_DITHER_LEVELS = 60  # s of a dithered payload: 2^(1-s) is still far above float32's smallest normal


@dataclass(frozen=True)
class Dithered(Payload):
    """Dithering to powers of two: ``norm * (-1)^negative * 2^(levels - s)``
    where ``levels > 0``, and 0 where ``levels == 0`` (natural dithering with s
    levels; TernGrad is s = 1: ``norm * sign * b``)."""

    d: int
    norm: np.floating
    s: int
    negative: np.ndarray
    levels: np.ndarray  # uint8, in [0, s]
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    def dense_values(self):
        lv = self.levels.astype(np.int32)
        mag = np.ldexp(np.float64(self.norm), lv - self.s)
        mag[lv == 0] = 0.0
        return np.where(self.negative, -mag, mag)


@dataclass(frozen=True)
class Composed(Payload):
    """A sparsifier's support ``indices`` (strictly increasing) whose K values
    are the payload ``inner`` of dimension K (a second compressor applied to
    the kept values, e.g. Top-K then natural compression)."""

    d: int
    indices: np.ndarray
    inner: Payload
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    def add_to(self, out, weight=1.0):
        v = _like(out, self.inner.to_dense())
        if weight != 1.0:
            v = np.float64(weight) * v
        out[_like(out, self.indices)] += v


# ------------------------------------------------------------------ PermK ---
@dataclass(frozen=True)
class Permuted(Payload):
    """PermK's message: worker ``index`` of ``n`` keeps the block ``indices``
    (increasing) of the coordinates that the permutation drawn from ``key``
    gives it (:func:`psmpi.compressors.permk.permk_block`), carrying ``values``.
    Only n, index, key and the values travel: the block follows from
    (d, n, index, key)."""

    d: int
    n: int
    index: int
    key: int  # uint64: the round's permutation
    indices: np.ndarray
    values: np.ndarray
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    add_to = Sparse.add_to  # the same (indices, values) addition, not a Sparse (isinstance checks elsewhere)


# --------------------------------------------------------------- PowerSGD ---
@dataclass(frozen=True)
class LowRank(Payload):
    """Consecutive segments covering [0, d), ``shapes[j] = (rows, cols, rank)``:
    a segment of rank 0 is sent as it is (``factors[j] = (values,)``, rows *
    cols of them); one of rank R > 0 is the rows x cols block M (row-major)
    approximated by P Q^T, ``factors[j] = (P, Q)`` of shapes (rows, R) and
    (cols, R) (PowerSGD)."""

    d: int
    shapes: tuple
    factors: tuple
    flag: bool = False  # method-defined bit (MARINA full sync, EF21+ replace)

    def dense_values(self):
        parts = []
        for (rows, cols, rank), f in zip(self.shapes, self.factors):
            if rank == 0:
                parts.append(np.asarray(f[0], np.float64))
            else:
                parts.append((np.asarray(f[0], np.float64) @ np.asarray(f[1], np.float64).T).ravel())
        return np.concatenate(parts)
