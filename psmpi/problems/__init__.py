"""Problems: ``logreg``, ``softmax``, ``quadratic`` and their smoothness constants."""
from .base import LocalProblem, lambda_max
from .logreg import LogReg
from .quadratic import Quadratic
from .softmax import Softmax

PROBLEMS = ("logreg", "softmax", "quadratic")

__all__ = ["LocalProblem", "LogReg", "Softmax", "Quadratic", "lambda_max", "PROBLEMS"]
