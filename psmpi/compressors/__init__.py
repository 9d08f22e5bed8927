"""Compression operators. ``make_compressor("topk:1%", d)`` builds one by spec."""
from . import identity, natural, qsgd, randk, sign, topk  # noqa: F401  (register)
from ..plugins import load_plugins
from .base import REGISTRY, Compressor, CompressorError, make_compressor
from .payload import Dense, Empty, Natural, Payload, Quantized, Signs, Sparse

__all__ = ["check_spec", "REGISTRY", "Compressor", "CompressorError", "make_compressor", "Payload",
           "Dense", "Sparse", "Empty", "Signs", "Natural", "Quantized"]


def check_spec(spec: str) -> None:
    """CompressorError unless ``spec`` names a registered compressor (its
    parameter is checked when the compressor is built for a dimension)."""
    name = str(spec).strip().partition(":")[0].lower()
    if name not in REGISTRY:
        raise CompressorError(f"unknown compressor '{name}'; valid: {', '.join(sorted(REGISTRY))}")



load_plugins("psmpi.compressors", REGISTRY, Compressor)  # compressors other packages register (psmpi/plugins.py)
