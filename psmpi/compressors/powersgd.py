import math

import numpy as np

from .base import Compressor, CompressorError, NoConstant, Setting, parse_param, register
from .payload import LowRank

NN_HINT = "--problem mlp|cnn|resnet18|module:factory"


def segments(blocks, d: int, rank: int) -> tuple:
    """``(offset, rows, cols, low_rank)`` covering [0, d) in order: each parameter
    with ndim >= 2 as a (shape[0], prod(shape[1:])) matrix, approximated with
    rank R when R (rows + cols) < rows cols (else it is no cheaper); the rest
    sent as they are, consecutive ones in one segment (rows = length, cols = 1)."""
    out, end = [], 0
    for offset, shape in blocks:
        size = math.prod(shape)
        if offset != end or size < 1:
            raise CompressorError(f"powersgd: parameter blocks must cover [0, d) in order (one at {offset})")
        rows, cols = (int(shape[0]), size // int(shape[0])) if len(shape) >= 2 else (size, 1)
        if len(shape) >= 2 and rank * (rows + cols) < rows * cols:
            out.append((offset, rows, cols, True))
        elif out and not out[-1][3]:
            o = out[-1][0]
            out[-1] = (o, offset + size - o, 1, False)
        else:
            out.append((offset, size, 1, False))
        end = offset + size
    if end != d:
        raise CompressorError(f"powersgd: the parameter blocks cover {end} of d={d} coordinates")
    return tuple(out)


@register
class PowerSGD(Compressor):
    """PowerSGD (Vogels, Karimireddy, Jaggi 2019, "PowerSGD: practical low-rank
    gradient compression for distributed optimization", NeurIPS 2019,
    Algorithm 1), per worker, for the neural-network problems.

    Each matrix-shaped parameter (ndim >= 2; a convolution kernel as
    (out channels, in channels x kernel size)) is a matrix M, approximated with
    rank R by one step of power (subspace) iteration from a warm-started Q:

        P = M Q;  P = orthogonalise(P) (numpy.linalg.qr);  Q = M^T P;  send P, Q;  M_hat = P Q^T

    Q (cols x R) is kept from round to round (the warm start); the first one
    is i.i.d. standard normal from the worker's own stream.  Vectors and biases
    (ndim <= 1), and matrices where R (rows + cols) >= rows cols, are sent as
    they are.  The difference from the paper: there all workers all-reduce P
    (before it is orthogonalised) and Q, so they share one P and Q; here each
    worker compresses its own vector and the master decodes each message, as
    for every compressor of psmpi (the average of the P_i Q_i^T is not the
    paper's product of averages).

    Class: biased, with no contraction guarantee (alpha unknown; the warm
    start makes C depend on the past), so no method has a theory step with it.
    Its error feedback in the paper (e = Delta - C(Delta), Delta = gradient +
    e, with momentum) is psmpi's ``ef14`` method (e += gamma grad; w = C(e);
    e -= w); ``ef21`` runs it as well.  Stateful: each worker has its own copy,
    and Q goes into checkpoints (:meth:`state_arrays`).

    Wire (kind 'lowrank'): per segment (rows, cols, rank), then P and Q of each
    approximated block and the values of the others; information content
    32 (sum R (rows + cols) + the dense values) bits.
    """

    name = "powersgd"
    deterministic = False
    takes_param = True
    per_worker = True
    constant = "biased, alpha unknown: no contraction guarantee; neural networks only"
    examples = ("powersgd:1", "powersgd:4")

    def setup(self, param):
        self.rank = parse_param(self.name, param, int, lambda r: r >= 1, "a rank R >= 1, e.g. 'powersgd:2'")
        if self.setting.blocks is None:
            raise CompressorError(f"powersgd needs a neural-network problem ({NN_HINT})")
        self.segments = segments(self.setting.blocks, self.d, self.rank)
        self._q = None

    @classmethod
    def example_setting(cls, d):
        """A d-vector as one matrix of about sqrt(d) x sqrt(d) and a bias of the rest."""
        rows = max(1, math.isqrt(d))
        cols = d // rows
        blocks = ((0, (rows, cols)),) + (((rows * cols, (d - rows * cols,)),) if d > rows * cols else ())
        return Setting(blocks=blocks)

    @property
    def alpha(self):
        raise NoConstant(f"{self.spec} has no known contraction parameter alpha (biased, no guarantee)")

    def bind(self, index, seed, clock):
        self._q = None

    def state_arrays(self):
        return {} if self._q is None else {f"q{j}": q for j, q in enumerate(self._q)}

    def restore_arrays(self, arrays):
        self._q = None if not arrays else [np.array(arrays[f"q{j}"], np.float64) for j in range(len(arrays))]

    def compress(self, x, rng):
        x = np.asarray(x, np.float64)
        if self._q is None:
            self._q = [rng.standard_normal((cols, self.rank)) for _, _, cols, low in self.segments if low]
        shapes, factors, j = [], [], 0
        for offset, rows, cols, low in self.segments:
            v = x[offset:offset + rows * cols]
            if not low:
                shapes.append((rows, cols, 0))
                factors.append((self.wire_values(v),))
                continue
            m = v.reshape(rows, cols)
            p = np.linalg.qr(m @ self._q[j])[0]
            q = m.T @ p
            self._q[j] = q
            j += 1
            shapes.append((rows, cols, self.rank))
            factors.append((self.wire_values(p), self.wire_values(q)))
        return LowRank(self.d, tuple(shapes), tuple(factors))
