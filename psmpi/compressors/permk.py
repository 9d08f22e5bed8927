import functools

import numpy as np

from .base import Compressor, CompressorError, Setting, register
from .payload import Permuted
from .randk import sorted_distinct

MAX_WORKERS = 1 << 20  # n of a PermK message (the decoder draws a permutation of max(d, n) entries)
EXAMPLE_WORKERS = 4  # n of the test tables' and `bench compress`'s PermK for d >= 4 (2d below: the case n = 2d)


def permk_key(seed: int, t: int, call: int) -> int:
    """The 64-bit key of the permutation of the ``call``-th PermK compression of
    round t in a run with ``seed``: a function of these three alone, so every
    worker draws the same permutation in the same round."""
    return int(np.random.SeedSequence(seed, spawn_key=(3, t, call)).generate_state(1, np.uint64)[0])


@functools.lru_cache(maxsize=4)
def _permutation(key: int, size: int) -> np.ndarray:
    """The permutation of range(size) drawn from ``key`` (the same on every rank;
    cached: the workers a process hosts and the master use one per round)."""
    perm = np.random.Generator(np.random.PCG64(key)).permutation(size)
    perm.flags.writeable = False
    return perm


def permk_block(d: int, n: int, index: int, key: int) -> tuple[np.ndarray, float]:
    """(the coordinates worker ``index`` of n keeps, increasing; their scale) for
    the permutation of key ``key``: for d >= n, with q = ceil(d/n), the block
    pi[q index : q (index + 1)] of a permutation pi of range(qn), without the
    entries >= d (padding where n does not divide d), scaled by n; for d < n
    (n = qd), the coordinate pi_index // q of a permutation pi of range(n) (the
    multiset of range(d), each q times), scaled by d.  The worker and the
    master's decoder both call this."""
    if d >= n:
        q = -(-d // n)
        block = _permutation(key, q * n)[q * index:q * (index + 1)]
        return sorted_distinct(block[block < d] if q * n > d else block, d), float(n)
    return _permutation(key, n)[index:index + 1] // (n // d), float(d)


@register
class PermK(Compressor):
    """PermK (Szlendak, Tyurin, Richtarik 2021, "Permutation compressors for
    provably faster distributed nonconvex optimization", ICLR 2022): correlated
    compressors C_1, ..., C_n, one per worker, from one random permutation pi
    that all workers share.

    The paper's definition for d >= n, d = qn: pi a random permutation of
    {1, ..., d}, C_i(x) = n sum_{j = q(i-1)+1}^{qi} x_{pi_j} e_{pi_j}: worker i
    keeps its block of d/n coordinates, scaled by n.  For n >= d, n = qd: pi a
    random permutation of the multiset holding each of {1, ..., d} q times,
    C_i(x) = d x_{pi_i} e_{pi_i} (implemented as the paper states it).

    d >= n not divisible by n (no definition we could check in the paper): x is
    padded with zeros to qn coordinates, q = ceil(d/n), and the paper's rule is
    applied there; worker i keeps the coordinates of its block below d (between
    q - (qn - d) and q of them).  Every coordinate is still in exactly one
    block, with probability 1/n in each, so everything below holds as for
    d = qn.  d < n with n not a multiple of d is refused.

    Each C_i is unbiased with omega = n - 1 (d >= n; omega = d - 1 for n = qd):
    coordinate j is kept with probability 1/n, scaled by n, so
    E||C_i(x) - x||^2 = (n - 1)||x||^2 exactly.  The correlated property: the
    blocks partition the coordinates, so (1/n) sum_i C_i(x) = x exactly, for
    every pi (the mean of the n workers' outputs on one vector has no error).

    Theory: a method whose step uses omega/n (dcgd, diana, marina) assumes the
    n compressors independent, which PermK's are not: ``--gamma theory`` is
    refused there (Szlendak et al. analyse MARINA with PermK through the Hessian
    variance, which psmpi does not compute).  EF21-type methods need each
    worker's C/(omega + 1) = C/n contractive on its own (alpha = 1/n): their
    steps hold.

    The shared stream: the permutation of the c-th compression of round t is
    drawn from a key that is a function of the run's seed, t and c alone
    (:func:`permk_key`), so every worker holds the same one without talking to
    the others, and a worker that skips a round (LAG, partial participation)
    does not shift the others' permutations.  A worker needs its own bound copy
    (:meth:`bind`: its index, the seed, the round clock).

    Wire (kind 'permk'): n, the worker index, the 64-bit key, then the worker's
    block of values in increasing order of coordinate, no indices: the master
    rebuilds the block from (d, n, index, key).  Information content: 32 bits
    per value kept (the permutation is shared randomness); the message adds a
    header of about 20 bytes.
    """

    name = "permk"
    unbiased = True
    deterministic = False
    per_worker = True
    correlated = True
    constant = "unbiased, omega = n - 1 for n workers if d >= n; correlated across workers"
    examples = ("permk",)

    def setup(self, param):
        super().setup(param)  # no parameter
        n = self.setting.workers
        if n is None:
            raise CompressorError("permk splits the coordinates among the workers: it needs the number of workers n "
                                  "(a run gives it)")
        if self.d < n and n % self.d:
            raise CompressorError(f"permk with d={self.d} < n={n} workers needs n to be a multiple of d "
                                  f"(the paper's definition for n >= d)")
        self.n = int(n)
        self.index = None

    @classmethod
    def example_setting(cls, d):
        return Setting(workers=EXAMPLE_WORKERS if d >= EXAMPLE_WORKERS else 2 * d)

    @property
    def omega(self):
        return float(self.n - 1 if self.d >= self.n else self.d - 1)

    def bind(self, index, seed, clock):
        if not 0 <= index < self.n:
            raise CompressorError(f"permk: worker index {index} outside 0..{self.n - 1}")
        self.index, self._seed, self._clock = int(index), int(seed), clock
        self._round, self._calls = None, 0

    def compress(self, x, rng):
        if self.index is None:
            raise CompressorError("permk compresses through a worker's own copy (Compressor.for_worker)")
        t = 0 if self._clock is None else self._clock()
        if t != self._round:
            self._round, self._calls = t, 0
        key = permk_key(self._seed, t, self._calls)
        self._calls += 1
        idx, scale = permk_block(self.d, self.n, self.index, key)
        return Permuted(self.d, self.n, self.index, key, idx, self.wire_values(np.asarray(x)[idx] * scale))
