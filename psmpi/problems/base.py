"""Local problems f_i held by one worker, and their curvature bounds."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import PsmpiError

DENSE_EIG_MAX = 2048  # feature dimensions up to this use a dense eigensolver
TORCH_HINT = "pip install 'psmpi[torch]'"


class NoSmoothnessConstant(ValueError):
    """A problem without a known smoothness constant L_i (neural networks): the step size must be given."""


class TorchMissing(PsmpiError, ImportError):
    """A neural-network problem asked for without PyTorch installed; the message is one line for the user."""


class LocalProblem:
    """f_i on one worker's data.

    ``hbound`` is a symmetric matrix H_i (over the feature dimension) with
    |nabla^2 (data term of f_i)| <= lambda_max(H_i) (Kronecker-expanded for
    multiclass), and ``reg_curvature`` bounds the regulariser's curvature;
    then L_i = lambda_max(H_i) + reg_curvature and
    L = lambda_max(mean_i H_i) + reg_curvature.
    """

    dim: int  # length of x
    rows: int  # number of local samples
    reg_curvature: float = 0.0
    param_blocks: tuple | None = None  # a neural network's (offset, shape) of each parameter in x (PowerSGD)

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def to_device(self, dev) -> "LocalProblem":
        """A copy of this problem whose data lives on ``dev`` (``--device gpu``)."""
        raise NotImplementedError(f"{type(self).__name__} has no GPU version")

    def subset(self, rows) -> "LocalProblem":
        """The same problem on some of its rows (local indices), e.g. the fixed evaluation
        subset of ``--eval-rows``."""
        raise NotImplementedError(f"{type(self).__name__} has no rows to take a subset of")

    def grad_aux(self, x: np.ndarray):
        """grad f_i(x) and what ``value_from`` needs to give f_i(x) cheaply later."""
        v, g = self.value_and_grad(x)
        return g, v

    def value_from(self, x: np.ndarray, aux) -> float:
        return aux

    def minibatch(self, rng: np.random.Generator, batch: int):
        """The sample of one minibatch gradient, drawn from ``rng``: ``batch`` row indices
        drawn uniformly with replacement (on the problem's device).  ``batch_grad`` takes it,
        so a method can evaluate the same minibatch at two points (EF21-PAGE)."""
        return rng.integers(0, self.rows, batch)

    def batch_grad(self, x: np.ndarray, idx) -> np.ndarray:
        """The gradient at x of the mean loss over the sampled rows ``idx`` (from ``minibatch``),
        plus the regulariser's gradient."""
        raise NotImplementedError

    def stoch_grad(self, x: np.ndarray, rng: np.random.Generator, batch: int) -> np.ndarray:
        """A minibatch gradient: ``batch_grad`` on a fresh ``minibatch``."""
        return self.batch_grad(x, self.minibatch(rng, batch))

    def correct(self, x, aux=None) -> int | None:
        """How many local rows x classifies correctly; None for a problem that is no
        classifier.  ``aux`` is what ``grad_aux(x)`` returned besides the gradient, which
        a problem may use to avoid recomputing."""
        return None

    def score(self, x) -> tuple[float, float | None]:
        """(f(x), accuracy) on this problem's rows: what a test set reports."""
        _, aux = self.grad_aux(x)
        right = self.correct(x, aux)
        return float(self.value_from(x, aux)), None if right is None else right / self.rows

    def hbound_dim(self) -> int:
        raise NotImplementedError

    def hbound_matvec(self, v: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def hbound_dense(self) -> np.ndarray:
        raise NotImplementedError

    def local_smoothness(self) -> float:
        return lambda_max(self.hbound_dim(), self.hbound_dense, self.hbound_matvec) + self.reg_curvature


def lambda_max(dim: int, dense, matvec) -> float:
    """Largest |eigenvalue| of a symmetric operator given densely or as a matvec."""
    if dim <= DENSE_EIG_MAX:
        ev = np.linalg.eigvalsh(dense())
        return float(np.max(np.abs(ev)))
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    v0 = np.ones(dim) / np.sqrt(dim)
    return float(abs(eigsh(op, k=1, which="LM", v0=v0, tol=1e-10, return_eigenvectors=False)[0]))


def gram_dense(A) -> np.ndarray:
    g = A.T @ A
    return g.toarray() if sp.issparse(g) else np.asarray(g)


def nonconvex_reg(x: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """lam * sum_j x_j^2/(1+x_j^2), its gradient 2 lam x/(1+x^2)^2; curvature <= 2 lam."""
    x2 = x * x
    den = 1.0 + x2
    return lam * float(np.sum(x2 / den)), (2.0 * lam) * x / (den * den)
