"""`ec1`: scalar quantization + range coding under a per-image fitted context model.

Each channel is quantized with its own step (`quantizer`: steps by quality, greedy RDOQ). The
symbols are range-coded under a discretized Laplace whose mean and scale a per-image linear
model predicts from already coded neighbours (`context`). The decoder moves each value toward
its prediction and its neighbours, then applies an optional per-image Wiener filter
(`loop_filter`). `bitstream` lays out `params` and range-codes the payload.
"""

from __future__ import annotations

import numpy as np

from .. import register
from ..base import Compressed, QuantizationMethod
from .bitstream import decode, encode
from .quantizer import DEFAULT_QUALITY, Quantized, quality_to_step, quantize


class EntropyCodedMethod(QuantizationMethod):
    """Per-channel scalar quantization, range-coded under a fitted neighbour context model (the
    `ec` of version-1 files; new files use `ec`, `codec.methods.ec`)."""

    name = "ec1"
    id = 3
    default_quality = DEFAULT_QUALITY

    def compress(self, latent: np.ndarray, quality: int) -> Compressed:
        """Code a float32 latent `(C, H, W)` at `quality` (1 = smallest, 100 = best)."""
        return encode(quantize(latent, quality))

    def decompress(self, params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """The float32 latent `(C, H, W)` that `compress` coded."""
        return decode(params, payload, shape)

    def round_trip(self, latent: np.ndarray, quality: int, exact: bool = True) -> np.ndarray:
        """The float32 latent a file of `latent` at `quality` holds, from the quantizer alone
        (no range coding); `exact=False` keeps the nearest levels (no RDOQ): several times
        faster, and close to the file's latent."""
        return quantize(latent, quality, rdoq=exact).dequantize()


register(EntropyCodedMethod())

__all__ = ["EntropyCodedMethod", "Quantized", "quality_to_step", "quantize"]
