"""Binary logistic regression with the nonconvex regulariser of the EF21 papers.

f_i(x) = (1/m_i) sum_j log(1 + exp(-b_j a_j^T x)) + lam sum_k x_k^2/(1 + x_k^2),
labels b_j in {-1, +1}; L_i = lambda_max(A_i^T A_i)/(4 m_i) + 2 lam.
"""
from __future__ import annotations

import copy

import numpy as np
from scipy.special import expit

from .base import LocalProblem, gram_dense, nonconvex_reg


class LogReg(LocalProblem):
    def __init__(self, A, b, lam: float = 0.1):
        self.A = A
        self.AT = A.T.tocsr() if hasattr(A, "tocsr") else np.ascontiguousarray(A.T)  # once, not per gradient
        self.b = np.asarray(b, dtype=np.float64)
        self.lam = float(lam)
        self.rows, self.dim = A.shape
        self.reg_curvature = 2.0 * self.lam
        self._expit = expit
        self._index = np.asarray  # host row indices -> this problem's device

    def to_device(self, dev):
        """A copy whose data (A, A^T, b) lives on ``dev``; constants stay as computed on the host."""
        out = copy.copy(self)
        out.A, out.AT, out.b = dev.csr(self.A), dev.csr(self.AT), dev.asarray(self.b)
        out._expit, out._index = dev.expit, dev.asarray
        return out

    def _vg(self, A, b, x):
        z = b * (A @ x)
        loss = float(np.mean(np.logaddexp(0.0, -z)))
        grad = A.T @ (b * self._expit(-z)) * (-1.0 / A.shape[0])
        r, rg = nonconvex_reg(x, self.lam)
        return loss + r, grad + rg

    def value_and_grad(self, x):
        g, z = self.grad_aux(x)
        return self.value_from(x, z), g

    def grad_aux(self, x):
        """The gradient and the margins z = b * (A x), from which the loss follows."""
        z = self.b * (self.A @ x)
        grad = self.AT @ (self.b * self._expit(-z))
        grad *= -1.0 / self.rows
        grad += (2.0 * self.lam) * x / (1.0 + x * x) ** 2
        return grad, z

    def value_from(self, x, z):
        return float(np.mean(np.logaddexp(0.0, -z))) + nonconvex_reg(x, self.lam)[0]

    def stoch_grad(self, x, rng, batch):
        idx = self._index(rng.integers(0, self.rows, batch))
        return self._vg(self.A[idx], self.b[idx], x)[1]

    def hbound_dim(self):
        return self.dim

    def hbound_matvec(self, v):
        return self.A.T @ (self.A @ v) / (4.0 * self.rows)

    def hbound_dense(self):
        return gram_dense(self.A) / (4.0 * self.rows)
