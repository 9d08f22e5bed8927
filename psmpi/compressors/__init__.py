"""Compression operators. ``make_compressor("topk:1%", d)`` builds one by spec."""
import numpy as np

from . import (  # noqa: F401  (register)
    bernoulli, identity, natural, natural_dithering, qsgd, randk, sign, terngrad, topk)
from ..plugins import load_plugins
from .base import REGISTRY, Compressor, CompressorError, build, compressor_class, example_specs
from .compose import EXAMPLES as COMPOSITION_EXAMPLES
from .compose import Composition, split_spec
from .payload import Composed, Dense, Dithered, Empty, Natural, Payload, Quantized, Signs, Sparse

__all__ = ["check_spec", "REGISTRY", "Compressor", "CompressorError", "make_compressor", "Payload", "Composition",
           "Dense", "Sparse", "Empty", "Signs", "Natural", "Quantized", "Dithered", "Composed", "all_examples",
           "example_specs", "COMPOSITION_EXAMPLES"]


def make_compressor(spec: str, d: int, value_dtype=np.float32) -> Compressor:
    """Build a compressor from ``NAME[:PARAM]`` (``topk:5``, ``topk:1%``,
    ``qsgd:4``) or a composition ``A+B`` (``topk:1%+natural``: B applied to
    the values A keeps, :class:`~psmpi.compressors.compose.Composition`)."""
    if "+" in str(spec):
        return Composition(d, str(spec).strip(), value_dtype)
    return build(spec, d, value_dtype)


def check_spec(spec: str) -> None:
    """CompressorError unless ``spec`` names a registered compressor or a
    valid composition ``A+B`` (parameters are checked when the compressor is
    built for a dimension)."""
    if "+" in str(spec):
        split_spec(spec)
    else:
        compressor_class(spec)


def all_examples() -> tuple[str, ...]:
    """Every registered compressor's example specs, then the compositions'."""
    return tuple(s for cls in REGISTRY.values() for s in example_specs(cls)) + COMPOSITION_EXAMPLES


load_plugins("psmpi.compressors", REGISTRY, Compressor)  # compressors other packages register (psmpi/plugins.py)
