"""Quadratics f_i(x) = 1/2 x^T A_i x - b_i^T x given as matrices (Python API).

``noise`` > 0 makes the stochastic gradient A_i x - b_i + noise * xi / sqrt(B)
with xi ~ N(0, I): the noisy-gradient setting of the EF21-SGDM paper's
Theorem 1 (f(x) = 1/2 ||x||^2 is A_i = I, b_i = 0).  A "minibatch" of a quadratic is
that noise draw (``minibatch``), not rows: the problem is no finite sum.
L_i = max |eig(A_i)|, L = max |eig(mean_i A_i)|.
"""
from __future__ import annotations

import copy

import numpy as np

from .base import LocalProblem


class Quadratic(LocalProblem):
    def __init__(self, A, b=None, noise: float = 0.0):
        self.A = np.asarray(A, dtype=np.float64)
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ValueError(f"quadratic A_i must be square, got shape {self.A.shape}")
        if not np.allclose(self.A, self.A.T):
            raise ValueError("quadratic A_i must be symmetric")
        self.dim = self.A.shape[0]
        self.b = np.zeros(self.dim) if b is None else np.asarray(b, dtype=np.float64).reshape(self.dim)
        self.noise = float(noise)
        self.rows = 1
        self._put = np.asarray  # host noise -> this problem's device

    def to_device(self, dev):
        out = copy.copy(self)
        out.A, out.b, out._put = dev.asarray(self.A), dev.asarray(self.b), dev.asarray
        return out

    def value_and_grad(self, x):
        Ax = self.A @ x
        return float(0.5 * x @ Ax - self.b @ x), Ax - self.b

    def minibatch(self, rng, batch):
        """A quadratic is not a finite sum (rows = 1): its 'sample' is the noise draw
        noise * xi / sqrt(B) itself (None without noise), so the same sample at two points
        gives gradients whose difference A_i (x - x') is exact, as PAGE's estimator assumes."""
        if not self.noise:
            return None
        return self._put(rng.standard_normal(self.dim)) * (self.noise / np.sqrt(batch))

    def batch_grad(self, x, xi):
        g = self.A @ x - self.b
        if xi is not None:
            g = g + xi
        return g

    def hbound_dim(self):
        return self.dim

    def hbound_matvec(self, v):
        return self.A @ v

    def hbound_dense(self):
        return self.A
