"""Methods, one file each; ``get_method(name)`` returns one by its CLI name."""
from . import clag, dcgd, diana, ef14, ef21, ef21_plus, ef21_sgd, ef21_sgdm, gd, ideal, marina  # noqa: F401
from .base import REGISTRY, Hyper, Method, MethodError, WorkerContext, ef21_gamma, get_method

ORDER = ("gd", "dcgd", "ef14", "ef21", "ef21-plus", "ef21-sgd", "ef21-sgdm", "ef21-sgd2m", "ef21-sgd-ideal",
         "ef21-sgdm-ideal", "lag", "clag", "marina", "diana")
_ordered = {k: REGISTRY[k] for k in ORDER} | REGISTRY
REGISTRY.clear()
REGISTRY.update(_ordered)

__all__ = ["REGISTRY", "Hyper", "Method", "MethodError", "WorkerContext", "get_method", "ef21_gamma"]
