"""`ec`: scalar quantization + range coding under a learned integer entropy model (default).

Each channel is quantized with `ec1`'s steps (greedy RDOQ, `quantizer`). The symbols are
range-coded under 16-bit frequency tables chosen, symbol by symbol, by a small integer network
learned over many latents (`model`) from already coded neighbours (`walk`); the decoder moves
each value toward its prediction and its neighbours in integers (`reconstruct`). Every step of
the decode is integer or an exactly rounded elementwise float operation, so a file decodes to
the same latent, bit for bit, on any machine. `bitstream` lays out `params` and the payload.
"""

from __future__ import annotations

import numpy as np

from .. import register
from ..base import Compressed, QuantizationMethod
from ..ec1.quantizer import DEFAULT_QUALITY
from .bitstream import decode
from .model import MODEL_ID, EntropyModel, shipped_model
from .quantizer import Quantized, compress, quantize


class IntegerEntropyCodedMethod(QuantizationMethod):
    """Per-channel scalar quantization, range-coded under a learned integer context model."""

    name = "ec"
    id = 4
    default_quality = DEFAULT_QUALITY

    def compress(self, latent: np.ndarray, quality: int) -> Compressed:
        """Code a float32 latent `(C, H, W)` at `quality` (1 = smallest, 100 = best)."""
        model = _model()
        return compress(MODEL_ID, model, quantize(model, latent, quality))

    def decompress(self, params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """The float32 latent `(C, H, W)` that `compress` coded."""
        return decode(shipped_model, params, payload, shape)

    def round_trip(self, latent: np.ndarray, quality: int, exact: bool = True) -> np.ndarray:
        """The float32 latent a file of `latent` at `quality` holds, from the quantizer alone;
        `exact=False` keeps the nearest levels (no RDOQ)."""
        return quantize(_model(), latent, quality, rdoq=exact).dequantize()


def _model() -> EntropyModel:
    """The model new files are coded with."""
    model = shipped_model(MODEL_ID)
    if model is None:
        raise RuntimeError(f"the shipped entropy model {MODEL_ID} is missing")
    return model


register(IntegerEntropyCodedMethod())

__all__ = ["IntegerEntropyCodedMethod", "Quantized", "quantize"]
