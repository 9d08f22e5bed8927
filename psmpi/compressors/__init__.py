"""Compression operators. ``make_compressor("topk:1%", d)`` builds one by spec."""
from . import identity, natural, qsgd, randk, sign, topk  # noqa: F401  (register)
from .base import REGISTRY, Compressor, CompressorError, make_compressor
from .payload import Dense, Empty, Natural, Payload, Quantized, Signs, Sparse

__all__ = ["REGISTRY", "Compressor", "CompressorError", "make_compressor", "Payload",
           "Dense", "Sparse", "Empty", "Signs", "Natural", "Quantized"]
