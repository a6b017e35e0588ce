"""Bit packing of quantized weight codes (pure math on NumPy arrays, no torch).

A b-bit weight is stored as its sign-and-magnitude code, as the paper counts its bits: the top
bit is the sign, the low b - 1 bits the index of its magnitude in the level set (0 = zero, in
``schemes.magnitude_levels`` order). ``pack_codes`` writes n such b-bit codes into
ceil(n * b / 8) bytes, least significant bit first; ``unpack_codes`` reads them back.
"""
from __future__ import annotations

import numpy as np


def packed_size(count: int, width: int) -> int:
    """Bytes holding ``count`` codes of ``width`` bits."""
    return (count * width + 7) // 8


def pack_codes(codes: np.ndarray, width: int) -> np.ndarray:
    """Pack non-negative integer ``codes`` (any shape, read flat) of ``width`` bits (1..16)
    into a 1-D uint8 array of ``packed_size(codes.size, width)`` bytes."""
    _check_width(width)
    flat = np.asarray(codes).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << width):
        raise ValueError(f"codes must lie in 0..{(1 << width) - 1} to fit {width} bits")
    bits = (flat[:, None] >> np.arange(width)) & 1  # (n, width), least significant bit first
    return np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, width: int, count: int) -> np.ndarray:
    """The ``count`` codes (int64, 1-D) of ``width`` bits that ``pack_codes`` wrote."""
    _check_width(width)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError("packed codes must be a 1-D uint8 array")
    if packed.size != packed_size(count, width):
        raise ValueError(f"{count} codes of {width} bits need {packed_size(count, width)} "
                         f"bytes, got {packed.size}")
    bits = np.unpackbits(packed, count=count * width, bitorder="little")
    return bits.reshape(count, width).astype(np.int64) @ (1 << np.arange(width, dtype=np.int64))


def sign_magnitude(negative: np.ndarray, index: np.ndarray, magnitude_bits: int) -> np.ndarray:
    """Codes with the sign in bit ``magnitude_bits`` and the magnitude index below it.

    ``negative``: bool array; ``index``: magnitude indices in 0..2^B - 1. Zero (index 0) is
    stored with a clear sign bit, whatever ``negative`` says: -0 and +0 are the same weight.
    """
    index = np.asarray(index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= 1 << magnitude_bits):
        raise ValueError(f"magnitude indices must lie in 0..{(1 << magnitude_bits) - 1}")
    sign = (np.asarray(negative, dtype=bool) & (index != 0)).astype(np.int64)
    return sign << magnitude_bits | index


def split_sign_magnitude(codes: np.ndarray, magnitude_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(negative (bool), magnitude index (int64)) of sign-and-magnitude ``codes``."""
    codes = np.asarray(codes, dtype=np.int64)
    return (codes >> magnitude_bits & 1).astype(bool), codes & ((1 << magnitude_bits) - 1)


def _check_width(width: int) -> None:
    if not isinstance(width, int) or not 1 <= width <= 16:
        raise ValueError(f"code width must be 1..16 bits, got {width!r}")
