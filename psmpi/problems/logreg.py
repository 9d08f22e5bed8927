"""Binary logistic regression with the nonconvex regulariser of the EF21 papers.

f_i(x) = (1/m_i) sum_j log(1 + exp(-b_j a_j^T x)) + lam sum_k x_k^2/(1 + x_k^2),
labels b_j in {-1, +1}; L_i = lambda_max(A_i^T A_i)/(4 m_i) + 2 lam.
"""
from __future__ import annotations

import copy

import numpy as np

from ..parallel import chunks, run_all, threads
from .base import LocalProblem, gram_dense, nonconvex_reg


def weighted_sigmoid_neg(b, z):
    """b / (1 + exp(z)) elementwise, i.e. b times the logistic function at -z
    (for labels b = +-1, b * (1/(1 + exp(z))) bit for bit: only the sign
    differs).  numpy's vectorised exp (4x scipy's expit here) also runs on
    CuPy arrays; each entry depends on its own inputs only, wherever it sits
    in the array, which the stacked gradients of :class:`LogRegBatch` rely on."""
    with np.errstate(over="ignore"):  # exp(z) = inf for z > 709 gives the exact limit 0
        e = np.exp(z)
        e += 1.0
        return np.divide(b, e, out=e)


def reg_grad(x, lam: float):
    """The gradient 2 lam x/(1 + x^2)^2 of the nonconvex regulariser (as every gradient here adds it)."""
    return (2.0 * lam) * x / (1.0 + x * x) ** 2


class LogReg(LocalProblem):
    def __init__(self, A, b, lam: float = 0.1):
        self.A = A
        self.AT = A.T  # a transposed view of the same data (for CSR: CSC, whose product scatters row by row)
        self.b = np.asarray(b, dtype=np.float64)
        self.lam = float(lam)
        self.rows, self.dim = A.shape
        self.reg_curvature = 2.0 * self.lam
        self._index = np.asarray  # host row indices -> this problem's device

    def to_device(self, dev):
        """A copy whose data (A, A^T, b) lives on ``dev``; constants stay as computed on the host."""
        out = copy.copy(self)
        out.A, out.b = dev.csr(self.A), dev.asarray(self.b)
        out.AT = out.A.T
        out._index = dev.asarray
        return out

    def subset(self, rows):
        return LogReg(self.A[rows], self.b[rows], self.lam)

    def _vg(self, A, b, x):
        z = b * (A @ x)
        loss = float(np.mean(np.logaddexp(0.0, -z)))
        grad = A.T @ weighted_sigmoid_neg(b, z) * (-1.0 / A.shape[0])
        r, rg = nonconvex_reg(x, self.lam)
        return loss + r, grad + rg

    def value_and_grad(self, x):
        g, z = self.grad_aux(x)
        return self.value_from(x, z), g

    def grad_aux(self, x):
        """The gradient and the margins z = b * (A x), from which the loss follows."""
        z = self.b * (self.A @ x)
        grad = self.AT @ weighted_sigmoid_neg(self.b, z)
        grad *= -1.0 / self.rows
        grad += reg_grad(x, self.lam)
        return grad, z

    def value_from(self, x, z):
        return float(np.mean(np.logaddexp(0.0, -z))) + nonconvex_reg(x, self.lam)[0]

    def correct(self, x, aux=None) -> int:
        """Rows with margin b_j <a_j, x> > 0 (exactly 0 counts as wrong); ``aux`` is the
        margins grad_aux(x) computed."""
        z = self.b * (self.A @ x) if aux is None else aux
        return int(np.count_nonzero(z > 0))

    def minibatch(self, rng, batch):
        return self._index(rng.integers(0, self.rows, batch))

    def batch_grad(self, x, idx):
        return self._vg(self.A[idx], self.b[idx], x)[1]

    def hbound_dim(self):
        return self.dim

    def hbound_matvec(self, v):
        return self.A.T @ (self.A @ v) / (4.0 * self.rows)

    def hbound_dense(self):
        return gram_dense(self.A) / (4.0 * self.rows)


class _Stacked:
    """A contiguous group of LogReg workers as one block-diagonal CSR matrix."""

    def __init__(self, problems):
        import scipy.sparse as sp

        self.n, self.dim = len(problems), problems[0].dim
        self.offsets = np.concatenate([[0], np.cumsum([p.rows for p in problems])])
        mats = [p.A.tocsr() for p in problems]
        nnz = np.array([m.nnz for m in mats])
        data = np.concatenate([m.data for m in mats])
        cols = np.concatenate([m.indices.astype(np.int64) + w * self.dim for w, m in enumerate(mats)])
        starts = np.concatenate([[0], np.cumsum(nnz)[:-1]])
        ptr = np.concatenate([[0]] + [m.indptr[1:].astype(np.int64) + s for m, s in zip(mats, starts)])
        self.B = sp.csr_matrix((data, cols, ptr), shape=(int(self.offsets[-1]), self.n * self.dim))
        self.BT = self.B.T
        self.b = np.concatenate([p.b for p in problems])
        self.scale = np.array([-1.0 / p.rows for p in problems])[:, None]
        self.lam = problems[0].lam

    def grad_aux(self, x):
        """(gradients as an n x d array, margins of all rows) at ``x``."""
        z = self.b * (self.B @ np.tile(x, self.n))
        G = (self.BT @ weighted_sigmoid_neg(self.b, z)).reshape(self.n, self.dim)
        G *= self.scale
        G += reg_grad(x, self.lam)
        return G, z


class LogRegBatch:
    """The exact local gradients of n :class:`LogReg` workers in a few calls.

    The serial runtime simulates n workers in one process, and there the
    per-call overhead of n small sparse products dominates.  This stacks the
    workers' rows once, in worker order, with worker w's features renumbered
    w d + j: a block-diagonal CSR matrix B.  Then B (x, ..., x) gives every
    worker's margins and B^T r every worker's A_w^T r_w, in two calls.  Each
    entry of those products adds the same terms in the same order as the
    worker's own products (rows in stored order, A^T as the transpose view of
    the same CSR data), and the elementwise steps are the same operations, so
    the gradients equal :meth:`LogReg.grad_aux` bit for bit (tested); this
    keeps the serial iterates equal to the MPI runtime's.

    With ``parts`` > 1 (default: :func:`psmpi.parallel.threads`) the workers
    are split into that many contiguous groups, one stacked matrix each, and
    the groups are computed at the same time on threads (scipy's products and
    numpy's elementwise loops release the GIL); a worker's numbers do not
    depend on its group.
    """

    def __init__(self, problems, parts: int | None = None):
        self.n, self.dim = len(problems), problems[0].dim
        # a group below ~4 workers' rows costs more in thread hand-offs than it saves
        parts = threads() if parts is None else parts
        self.groups = [_Stacked(problems[a:b]) for a, b in chunks(self.n, min(parts, max(1, self.n // 4)))]
        # worker -> (its group's position, its row in the group's gradients, its margins' slice)
        self.where = [(j, w, slice(int(g.offsets[w]), int(g.offsets[w + 1])))
                      for j, g in enumerate(self.groups) for w in range(g.n)]
        self._round = None

    @staticmethod
    def applies(problems) -> bool:
        """Every problem a host LogReg with the same lam and scipy CSR data."""
        return (len(problems) > 1 and all(type(p) is LogReg and p.lam == problems[0].lam
                                          and getattr(p.A, "format", None) == "csr" for p in problems))

    def grad_aux(self, index: int, x, t: int):
        """Worker ``index``'s (gradient, margins) at round ``t``'s iterate ``x``
        (computed for every worker, the groups at the same time, at the first
        request of the round)."""
        if self._round != t:
            self._out = run_all(lambda g: g.grad_aux(x), self.groups)
            self._round = t
        j, w, rows = self.where[index]
        G, z = self._out[j]
        return G[w], z[rows]
