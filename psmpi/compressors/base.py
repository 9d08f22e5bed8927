"""Compressor base class and the registry that maps spec strings to classes."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from ..errors import PsmpiError
from .payload import Payload

REGISTRY: dict[str, type["Compressor"]] = {}

BLOCK = 1 << 16  # entries per block of the host passes (natural, qsgd): scratch in the cache, few Python calls (measured best of 2^12..2^18)


def for_uniform_blocks(rng, d: int, n: int, fn) -> None:
    """``fn(s, u)`` for the consecutive blocks ``[s, s + len(u))`` of range(d)
    (``n`` entries each, the last one shorter), in order, where ``u`` holds
    the block's uniforms: together ``rng.random(d)``, drawn ``n`` at a time
    into one reused buffer (numpy's Generator gives the same numbers in
    consecutive draws as in one draw of all of them, and is left in the same
    state).

    (Drawing the blocks ahead on a second thread, while ``fn`` runs on this
    one, halves the time of natural compression on an idle machine, but after
    any threaded BLAS call -- a dot product, as in QSGD's norm or a method's
    ``g @ g`` -- OpenBLAS's threads spin for a while on the other cores and
    the second thread made it slower on 2 cores: not done.)
    """
    u = np.empty(n)
    for s in range(0, d, n):
        m = min(n, d - s)
        if m < n:
            u = u[:m]
        rng.random(m, out=u)
        fn(s, u)


class CompressorError(PsmpiError, ValueError):
    """A compressor spec that cannot be built (unknown name, bad parameter)."""


class NoConstant(CompressorError, NotImplementedError):
    """A compressor whose class constant (alpha) is not known: PowerSGD, biased with no
    contraction guarantee.  A method that needs the constant (its theory step, a
    default) turns this into its own one-line error."""


@dataclass(frozen=True)
class Setting:
    """What a run tells a compressor besides d: ``workers`` n (PermK splits the
    coordinates among them) and ``blocks``, the ``(offset, shape)`` of each
    parameter of a neural network in the flat vector (PowerSGD); None where the
    run has none."""

    workers: int | None = None
    blocks: tuple | None = None


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


class Compressor:
    """A compression operator C: R^d -> R^d bound to a dimension and a wire dtype.

    Subclasses declare their class: ``unbiased = False`` with a contraction
    parameter ``alpha`` (E||C(x)-x||^2 <= (1-alpha)||x||^2), or
    ``unbiased = True`` with a variance parameter ``omega``
    (E C(x) = x, E||C(x)-x||^2 <= omega ||x||^2).
    """

    name = "base"
    unbiased = False
    deterministic = True
    takes_param = False
    sparsifier = False  # compress() returns a Sparse payload: can be the first part of a composition 'A+B'
    examples: tuple[str, ...] = ()  # specs the test tables and `bench compress` use (default: the name)
    device_native = False  # compress() takes device arrays (else a worker on a GPU compresses a host copy)
    per_worker = False  # each worker needs its own bound copy (for_worker): a correlated or stateful compressor
    correlated = False  # the workers' copies are not independent (PermK): theory that assumes they are does not hold
    constant = ""  # its alpha or omega in words, for --help
    _binding = None  # (index, seed, clock) of a bound copy

    def __init__(self, d: int, param: str | None = None, value_dtype=np.float32, scale: float = 1.0,
                 setting: Setting | None = None):
        self.d = int(d)
        self.value_dtype = np.dtype(value_dtype)
        self.param = param
        self.scale = float(scale)  # applied to the output; 1/(omega+1) makes an unbiased C contractive
        self.setting = Setting() if setting is None else setting
        self.setup(param)

    def setup(self, param):
        if param is not None:
            raise CompressorError(f"compressor '{self.name}' takes no parameter (got ':{param}')")

    # class constants -------------------------------------------------------
    @property
    def alpha(self) -> float:
        """Contraction parameter; for an unbiased C this is the alpha of C/(omega+1)."""
        if type(self).unbiased:  # the class declaration, also for a scaled copy
            return 1.0 / (self.omega + 1.0)
        raise NotImplementedError

    @property
    def omega(self) -> float:
        raise NotImplementedError

    def compress(self, x: np.ndarray, rng: np.random.Generator) -> Payload:
        raise NotImplementedError

    # one copy per worker -----------------------------------------------------
    def for_worker(self, index: int, seed: int, clock=None) -> "Compressor":
        """The compressor worker ``index`` runs with: this one (shared by every
        worker) unless the class is ``per_worker``; then a copy bound by
        :meth:`bind` to the worker, the run's ``seed`` (the same on every
        worker) and ``clock``, a function giving the current round."""
        if not self.per_worker:
            return self
        out = copy.copy(self)
        out._binding = (index, seed, clock)
        out.bind(index, seed, clock)
        return out

    def bind(self, index: int, seed: int, clock) -> None:
        """Set up a per-worker copy (see :meth:`for_worker`)."""

    def state_arrays(self) -> dict:
        """The state a per-worker copy keeps from round to round, as named arrays
        (a checkpoint stores them; PowerSGD's warm-started Q)."""
        return {}

    def restore_arrays(self, arrays: dict) -> None:
        """Set the state :meth:`state_arrays` gave (a resumed run)."""

    @classmethod
    def example_setting(cls, d: int) -> Setting | None:
        """The run setting the test tables and ``psmpi bench compress`` build this
        compressor with at dimension d (None: it needs none)."""
        return None

    def fuses_ef_step(self, device) -> bool:
        """Whether :meth:`fused_ef_step` may return a message on ``device`` (it may still
        decline particular arrays); False skips the call."""
        return False

    def fused_ef_step(self, device, target, g, value_dtype):
        """The error-feedback step of the EF21 family, c = C(target - g) and
        g += c (in place), as one fused kernel on ``device``
        (:class:`psmpi.backend.Device`), values in ``value_dtype``: returns c,
        a payload, when this compressor has such a kernel there for these
        arrays; else None: no fused kernel, the caller compresses
        ``target - g`` and adds the result to ``g``.  The default has none
        (TopK has one on a GPU, and a host form that never writes target - g)."""
        return None

    def as_contractive(self) -> "Compressor":
        """The contractive compressor used by EF-type methods.

        A biased compressor is returned unchanged; an unbiased one is scaled by
        1/(omega+1), which makes it contractive with alpha = 1/(omega+1).
        """
        if not self.unbiased or self.scale != 1.0:
            return self
        out = type(self)(self.d, self.param, self.value_dtype, scale=1.0 / (self.omega + 1.0), setting=self.setting)
        out.unbiased = False
        return out if self._binding is None else out.for_worker(*self._binding)

    def wire_values(self, v: np.ndarray) -> np.ndarray:
        if self.scale != 1.0:
            v = v * self.scale
        with np.errstate(over="ignore"):  # an overflow becomes inf, which the master reports as divergence
            return v.astype(self.value_dtype)

    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param}"

    def __repr__(self):
        return f"<{self.spec} d={self.d}>"


def parse_param(name: str, param, convert, valid, what: str):
    """``convert(param)`` if it converts and ``valid`` holds, else a one-line
    CompressorError saying that ``name`` needs ``what``."""
    try:
        v = convert(param)
        if not valid(v):
            raise ValueError
    except (TypeError, ValueError):
        raise CompressorError(f"{name} needs {what} (got {param!r})") from None
    return v


def parse_count(name: str, param: str | None, d: int) -> int:
    """K from ``'5'`` or ``'1%'`` (at least one coordinate), checked against d."""
    if param is None or param == "":
        raise CompressorError(f"compressor '{name}' needs K, e.g. '{name}:1' or '{name}:1%'")
    try:
        if param.endswith("%"):
            frac = float(param[:-1]) / 100.0
            if not 0.0 < frac <= 1.0:
                raise ValueError
            k = max(1, math.ceil(frac * d))
        else:
            k = int(param)
    except ValueError:
        raise CompressorError(f"bad K in '{name}:{param}': use a positive integer or a percentage like 1%") from None
    if not 1 <= k <= d:
        raise CompressorError(f"K must be in [1, d={d}] for '{name}:{param}'")
    return k


def example_specs(cls) -> tuple[str, ...]:
    """The specs a registered compressor class is tested and benchmarked with."""
    return tuple(cls.examples) or (cls.name,)


def compressor_class(spec: str) -> type[Compressor]:
    """The registered class of ``NAME[:PARAM]``; CompressorError (one line) if unknown."""
    name = str(spec).strip().partition(":")[0].lower()
    cls = REGISTRY.get(name)
    if cls is None:
        raise CompressorError(f"unknown compressor '{name}'; valid: {', '.join(sorted(REGISTRY))}")
    return cls


def build(spec: str, d: int, value_dtype=np.float32, scale: float = 1.0, setting: Setting | None = None) -> Compressor:
    """One compressor ``NAME[:PARAM]`` (``topk:5``, ``topk:1%``, ``qsgd:4``) for dimension d
    (``psmpi.compressors.make_compressor`` also builds compositions ``A+B``)."""
    _, colon, param = str(spec).strip().partition(":")
    return compressor_class(spec)(d, param if colon else None, value_dtype, scale, setting)
