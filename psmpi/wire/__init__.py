"""Message codec: payload <-> bytes. See :mod:`psmpi.wire.codec` for the layout."""
from .codec import WireError, decode, encode

__all__ = ["encode", "decode", "WireError"]
