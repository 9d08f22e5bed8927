"""Methods, one file each; ``get_method(name)`` returns one by its CLI name.

Adding a method: one file in this folder (see ef21.py) and one line in MODULES.
"""
import importlib

from ..plugins import load_plugins
from .base import (REGISTRY, Hyper, Method, MethodError, NoTheory, Param, WorkerContext, ef21_gamma, get_method,
                   users_of)

# one module per method, in the order of --help and the README; importing a module registers its method
MODULES = (
    "gd",
    "dcgd",
    "ef14",
    "ef21",
    "ef21_plus",
    "ef21_sgd",
    "ef21_sgdm",
    "ef21_sgd2m",
    "ef21_sgd_ideal",
    "ef21_sgdm_ideal",
    "ef21_pp",
    "ef21_bc",
    "ef21_hb",
    "ef21_page",
    "lag",
    "clag",
    "three_pc_v1",
    "three_pc_v2",
    "three_pc_v3",
    "three_pc_v4",
    "three_pc_v5",
    "marina",
    "pp_marina",
    "diana",
    "spars_ams",
    "ams",
)
for _m in MODULES:
    importlib.import_module(f"{__name__}.{_m}")
_ordered = sorted(REGISTRY.items(), key=lambda kv: MODULES.index(kv[1].__module__.rpartition(".")[2]))
REGISTRY.clear()
REGISTRY.update(_ordered)


def all_params() -> dict:
    """Every declared hyper-parameter by name, first declaration wins (names are global:
    one meaning per name across methods)."""
    out = {}
    for cls in REGISTRY.values():
        for p in cls.params:
            out.setdefault(p.name, p)
    return out


def relevant(key: str, method) -> bool:
    """False for a hyper-parameter ``method`` does not declare (zeta for EF21, eta for
    EF14, ...); True for every other option and for a method not registered."""
    name = str(key).replace("-", "_")
    cls = REGISTRY.get(str(method).lower())
    return name not in all_params() or cls is None or cls.param(name) is not None


def check_config(cfg) -> None:
    """The checks that need the registries: the method exists, the compressor
    spec names a known compressor (the method's default filled in), and every
    hyper-parameter given is one the method declares, with a valid value, and
    the method can go on after a worker failure if asked to."""
    from ..compressors import check_spec, compressor_class

    method = get_method(cfg.method)
    if cfg.compressor is None:
        cfg.compressor = method.default_compressor
    check_spec(cfg.compressor)
    cfg.params = method.resolve(cfg.params)  # what depends on the compressor is filled when it is built
    if cfg.on_worker_failure == "continue":
        method.check_resync()
        if "+" not in cfg.compressor and compressor_class(cfg.compressor).correlated:
            raise MethodError(f"--compressor {cfg.compressor} splits the work between the workers, so losing one "
                              f"loses its share: use --on-worker-failure abort")


__all__ = ["REGISTRY", "Hyper", "Method", "MethodError", "NoTheory", "Param", "WorkerContext", "get_method",
           "ef21_gamma", "all_params", "users_of", "relevant", "check_config"]

load_plugins("psmpi.methods", REGISTRY, Method)  # methods other packages register (psmpi/plugins.py)
