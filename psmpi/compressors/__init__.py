"""Compression operators. ``make_compressor("topk:1%", d)`` builds one by spec."""
from . import (  # noqa: F401  (register)
    bernoulli, identity, natural, natural_dithering, qsgd, randk, sign, terngrad, topk)
from ..plugins import load_plugins
from .base import REGISTRY, Compressor, CompressorError, example_specs, make_compressor
from .compose import EXAMPLES as COMPOSITION_EXAMPLES
from .compose import Composition, split_spec
from .payload import Composed, Dense, Dithered, Empty, Natural, Payload, Quantized, Signs, Sparse

__all__ = ["check_spec", "REGISTRY", "Compressor", "CompressorError", "make_compressor", "Payload", "Composition",
           "Dense", "Sparse", "Empty", "Signs", "Natural", "Quantized", "Dithered", "Composed", "all_examples",
           "example_specs", "COMPOSITION_EXAMPLES"]


def check_spec(spec: str) -> None:
    """CompressorError unless ``spec`` names a registered compressor or a
    valid composition ``A+B`` (parameters are checked when the compressor is
    built for a dimension)."""
    if "+" in str(spec):
        split_spec(spec)
        return
    name = str(spec).strip().partition(":")[0].lower()
    if name not in REGISTRY:
        raise CompressorError(f"unknown compressor '{name}'; valid: {', '.join(sorted(REGISTRY))}")


def all_examples() -> tuple[str, ...]:
    """Every registered compressor's example specs, then the compositions'."""
    return tuple(s for cls in REGISTRY.values() for s in example_specs(cls)) + COMPOSITION_EXAMPLES


load_plugins("psmpi.compressors", REGISTRY, Compressor)  # compressors other packages register (psmpi/plugins.py)
