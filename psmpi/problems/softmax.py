"""Multiclass logistic (softmax) regression with the nonconvex regulariser, as
in the EF21-SGDM paper's MNIST experiment.

x is the d x C weight matrix W flattened row-major; with one-hot labels y_j,
f_i(W) = (1/m_i) sum_j [logsumexp(a_j^T W) - a_j^T W y_j] + lam sum x_k^2/(1+x_k^2).
The cross-entropy Hessian in the logits is diag(p) - p p^T <= I/2, so
L_i = lambda_max(A_i^T A_i)/(2 m_i) + 2 lam.
"""
from __future__ import annotations

import numpy as np

from .base import LocalProblem, gram_dense, nonconvex_reg


class Softmax(LocalProblem):
    def __init__(self, A, y, n_classes: int, lam: float = 0.1):
        self.A = A
        self.y = np.asarray(y, dtype=np.int64)
        self.C = int(n_classes)
        self.lam = float(lam)
        self.rows, self.features = A.shape
        self.dim = self.features * self.C
        self.reg_curvature = 2.0 * self.lam

    def subset(self, rows):
        return Softmax(self.A[rows], self.y[rows], self.C, self.lam)

    def _vg(self, A, y, x):
        from scipy.special import logsumexp, softmax  # here: scipy.special costs every rank ~40 ms to import

        W = x.reshape(self.features, self.C)
        Z = np.asarray(A @ W)
        m = Z.shape[0]
        loss = float(np.mean(logsumexp(Z, axis=1) - Z[np.arange(m), y]))
        P = softmax(Z, axis=1)
        P[np.arange(m), y] -= 1.0
        grad = np.asarray(A.T @ P).ravel() / m
        r, rg = nonconvex_reg(x, self.lam)
        return loss + r, grad + rg

    def value_and_grad(self, x):
        return self._vg(self.A, self.y, x)

    def correct(self, x, aux=None) -> int:
        """Rows whose largest score is their class (ties: the lowest class index)."""
        Z = np.asarray(self.A @ x.reshape(self.features, self.C))
        return int(np.count_nonzero(np.argmax(Z, axis=1) == self.y))

    def batch_grad(self, x, idx):
        return self._vg(self.A[idx], self.y[idx], x)[1]

    def hbound_dim(self):
        return self.features

    def hbound_matvec(self, v):
        return self.A.T @ (self.A @ v) / (2.0 * self.rows)

    def hbound_dense(self):
        return gram_dense(self.A) / (2.0 * self.rows)
