"""`q8`: per-channel 8-bit min–max quantization + LZMA with a delta filter (as vaepack does)."""

from __future__ import annotations

import lzma

import numpy as np

from ..errors import LatentFileError
from . import register
from .base import Compressed, QuantizationMethod
from .bounded import unlzma_exact

_FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 9}]


class Q8Method(QuantizationMethod):
    """Each channel mapped linearly from its [min, max] (float16 in params) to 0..255."""

    name = "q8"
    id = 2
    default_quality = 100

    def compress(self, latent: np.ndarray, quality: int) -> Compressed:
        low = latent.min(axis=(1, 2)).astype(np.float16)
        high = latent.max(axis=(1, 2)).astype(np.float16)
        lo, span = _range(low, high)
        q = np.clip(np.round((latent - lo) / span * 255), 0, 255).astype(np.uint8)
        params = np.stack([low, high], axis=1).tobytes()
        payload = lzma.compress(q.tobytes(), format=lzma.FORMAT_RAW, filters=_FILTERS)
        return Compressed(params, payload)

    def decompress(self, params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        channels = shape[0]
        if len(params) != channels * 4:
            raise LatentFileError("bad q8 parameters")
        bounds = np.frombuffer(params, np.float16).reshape(channels, 2)
        if not np.isfinite(bounds).all():
            raise LatentFileError("bad q8 parameters (not finite)")
        lo, span = _range(bounds[:, 0], bounds[:, 1])
        size = channels * shape[1] * shape[2]
        q = np.frombuffer(unlzma_exact(payload, size, _decode_filters(size)), np.uint8)
        q = q.reshape(shape)
        return (q.astype(np.float32) / 255 * span + lo).astype(np.float32)


def _decode_filters(size: int) -> list[dict]:
    """`_FILTERS` with the LZMA dictionary cut to the output size: preset 9's 64 MiB dictionary
    would be allocated by every decode, and no match reaches further back than `size` bytes."""
    return [_FILTERS[0], {"id": lzma.FILTER_LZMA2, "dict_size": max(4096, size)}]


def _range(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel offset and span as `(C, 1, 1)` float32, the span never zero."""
    lo = low.astype(np.float32)[:, None, None]
    span = np.maximum(high.astype(np.float32) - low.astype(np.float32), 1e-3)[:, None, None]
    return lo, span


register(Q8Method())
