"""Helpers for decompressing untrusted payloads without unbounded allocations."""

from __future__ import annotations

import lzma
import zlib

from ..errors import LatentFileError


def inflate_exact(payload: bytes, size: int) -> bytes:
    """zlib-decompress `payload`, which must expand to exactly `size` bytes."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, size + 1)
    except zlib.error as exc:
        raise LatentFileError(f"corrupted payload: {exc}") from None
    if len(data) != size or not inflater.eof:
        raise LatentFileError(f"payload expands to the wrong size (expected {size} bytes)")
    return data


def unlzma_exact(payload: bytes, size: int, filters: list[dict]) -> bytes:
    """Raw-LZMA-decompress `payload`, which must expand to exactly `size` bytes."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    try:
        data = decompressor.decompress(payload, size + 1)
    except lzma.LZMAError as exc:
        raise LatentFileError(f"corrupted payload: {exc}") from None
    if len(data) != size:
        raise LatentFileError(f"payload expands to the wrong size (expected {size} bytes)")
    return data
