"""Fixed-width symbols as bytes: the layout COIN's quantized weights and COIN++'s uncoded
latents share — each symbol's ``bits`` bits most significant first, back to back, the last byte
padded with zero bits."""

from __future__ import annotations

import math

import numpy as np

from metacompress.errors import FormatError


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Unsigned ``bits``-bit integers (1–16) as packed bytes."""
    flat = np.asarray(symbols).reshape(-1).astype(np.uint32)
    planes = (flat[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint32)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1)).tobytes()


def unpack_bits(data: bytes, count: int, bits: int, source: str = "input") -> np.ndarray:
    """``count`` ``bits``-bit symbols (int64) from exactly the bytes ``pack_bits`` writes for them;
    a wrong length or a non-zero padding bit is damage (FormatError)."""
    expected = math.ceil(count * bits / 8)
    if len(data) != expected:
        raise FormatError(f"{source}: payload is {len(data)} bytes, {count} {bits}-bit symbols need {expected}")
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if planes[count * bits:].any():
        raise FormatError(f"{source}: corrupt payload (non-zero padding bits)")
    planes = planes[:count * bits].reshape(count, bits)
    return (planes.astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(axis=1)
