"""Binary logistic regression with the nonconvex regulariser of the EF21 papers.

f_i(x) = (1/m_i) sum_j log(1 + exp(-b_j a_j^T x)) + lam sum_k x_k^2/(1 + x_k^2),
labels b_j in {-1, +1}; L_i = lambda_max(A_i^T A_i)/(4 m_i) + 2 lam.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

from .base import LocalProblem, gram_dense, nonconvex_reg


class LogReg(LocalProblem):
    def __init__(self, A, b, lam: float = 0.1):
        self.A = A
        self.b = np.asarray(b, dtype=np.float64)
        self.lam = float(lam)
        self.rows, self.dim = A.shape
        self.reg_curvature = 2.0 * self.lam

    def _vg(self, A, b, x):
        z = b * (A @ x)
        loss = float(np.mean(np.logaddexp(0.0, -z)))
        grad = A.T @ (b * expit(-z)) * (-1.0 / A.shape[0])
        r, rg = nonconvex_reg(x, self.lam)
        return loss + r, grad + rg

    def value_and_grad(self, x):
        return self._vg(self.A, self.b, x)

    def stoch_grad(self, x, rng, batch):
        idx = rng.integers(0, self.rows, batch)
        return self._vg(self.A[idx], self.b[idx], x)[1]

    def hbound_dim(self):
        return self.dim

    def hbound_matvec(self, v):
        return self.A.T @ (self.A @ v) / (4.0 * self.rows)

    def hbound_dense(self):
        return gram_dense(self.A) / (4.0 * self.rows)
