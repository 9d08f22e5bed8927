"""Problems: ``logreg``, ``softmax``, ``quadratic`` and their smoothness constants;
neural networks (``mlp``, ``cnn``, ``resnet18``, ``module:factory``) in
:mod:`psmpi.problems.nn`, imported only when used (it needs PyTorch)."""
from .base import LocalProblem, NoSmoothnessConstant, TorchMissing, lambda_max
from .logreg import LogReg
from .quadratic import Quadratic
from .softmax import Softmax

PROBLEMS = ("logreg", "softmax", "quadratic")
NN_MODELS = ("mlp", "cnn", "resnet18")  # also NAME:OPTIONS, and module:factory for a user's torch.nn.Module


def is_nn_problem(name) -> bool:
    """A neural-network problem: a built-in model name (with or without :options) or a module:factory path."""
    name = str(name or "")
    return name.split(":", 1)[0] in NN_MODELS or ":" in name


__all__ = ["LocalProblem", "LogReg", "Softmax", "Quadratic", "lambda_max", "PROBLEMS", "NN_MODELS", "is_nn_problem",
           "NoSmoothnessConstant", "TorchMissing"]
