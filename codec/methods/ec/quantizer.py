"""The encoder's decisions: steps by quality, greedy RDOQ under the integer model, shrinks and
the per-channel scale-index offsets.

Steps are `ec1`'s (`ec.quantizer.channel_steps`). Each symbol takes, among the nearest level and
its two neighbours, the one minimising squared error (in steps, after the shrink toward the
mean) plus `RDOQ_LAMBDA` times its code length, rows visited in coding order with the model the
decoder will see. The mean predictor is fitted per image (`walk.fit_means`); each channel's
scale-index offset is the one that codes its symbols in the fewest bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base import Compressed
from ..ec1.quantizer import channel_steps, checked
from .bitstream import MAX_OFFSET, encode
from .model import (
    MAX_SYMBOL,
    MEAN_BITS,
    TABLE_BITS,
    EntropyModel,
    split_mean,
    step_feature,
    to_alphabet,
)
from .reconstruct import fit_filter, fit_shrinks, reconstruct, shrunk
from .walk import Means, fit_means, predict, walk

RDOQ_LAMBDA = 0.1


@dataclass(frozen=True)
class Quantized:
    """What the encoder decided: the mean predictors, symbols, their integer means, steps and
    shrinks."""

    coefs: Means
    symbols: np.ndarray
    means: np.ndarray
    steps: np.ndarray
    shrinks: np.ndarray
    filter: np.ndarray | None

    def dequantize(self) -> np.ndarray:
        """The float32 latent the decoder reconstructs from these symbols."""
        return reconstruct(self.symbols, self.means, self.steps, self.shrinks, self.filter)


def code_lengths(
    model: EntropyModel, symbols: np.ndarray, means: np.ndarray, scales: np.ndarray, offset: int
) -> np.ndarray:
    """Bits of each symbol (escapes' raw bits included) under the model and a scale offset."""
    centre, fraction = split_mean(means)
    coded = to_alphabet(symbols - centre)[0]
    return model.code_lengths[model.scale_index(scales, offset), fraction, coded]


def best_offsets(
    model: EntropyModel, symbols: np.ndarray, means: np.ndarray, scales: np.ndarray
) -> np.ndarray:
    """Each channel's scale-index offset that codes it in the fewest bits."""
    candidates = range(-MAX_OFFSET, MAX_OFFSET + 1)
    return np.array([
        min(candidates, key=lambda o: code_lengths(model, s, m, v, o).sum())
        for s, m, v in zip(symbols, means, scales, strict=True)
    ])  # fmt: skip


def quantize(model: EntropyModel, latent: np.ndarray, quality: int, rdoq: bool = True) -> Quantized:
    """Quantize a `(C, H, W)` latent under `model`; `rdoq=False` keeps the nearest levels."""
    latent = checked(latent)
    steps = channel_steps(quality, latent.shape[0])
    features = step_feature(steps)
    ratio = latent / steps[:, None, None]
    symbols = np.clip(np.round(ratio), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    coefs, means = fit_means(symbols)
    if rdoq:
        shrinks = fit_shrinks(ratio, symbols, means)
        symbols = _rdoq(model, coefs, ratio, symbols, features, shrinks)
        coefs, means = fit_means(symbols)
    shrinks = fit_shrinks(ratio, symbols, means)
    weight_bits = TABLE_BITS - np.log2(model.weight_frequencies)
    weights = fit_filter(ratio, shrunk(symbols, means, shrinks), weight_bits, RDOQ_LAMBDA)
    return Quantized(coefs, symbols, means, steps, shrinks, weights)


def compress(model_id: int, model: EntropyModel, q: Quantized) -> Compressed:
    """The file of quantized symbols: their scales, each channel's best offset, then coded."""
    means, scales = predict(model, q.coefs, q.symbols, step_feature(q.steps))
    offsets = best_offsets(model, q.symbols, means, scales)
    return encode(model_id, model, q, scales, offsets)


def _rdoq(
    model: EntropyModel,
    coefs: Means,
    ratio: np.ndarray,
    nearest: np.ndarray,
    features: np.ndarray,
    shrinks: np.ndarray,
) -> np.ndarray:
    """Greedy rate-distortion choice of each symbol among the nearest level and its neighbours."""
    around = np.array([-1, 0, 1])[:, None]

    def pick(c: int, y: int, x: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        cands = np.clip(nearest[c, y, x] + around, -MAX_SYMBOL, MAX_SYMBOL)
        toward = np.clip(mu / float(1 << MEAN_BITS) - cands, -1.0, 1.0)
        recon = cands + shrinks[c, 0] / 256 * toward
        bits = code_lengths(model, cands, np.broadcast_to(mu, cands.shape),
                            np.broadcast_to(scale, cands.shape), 0)  # fmt: skip
        cost = (ratio[c, y, x] - recon) ** 2 + RDOQ_LAMBDA * bits
        return cands[np.argmin(cost, axis=0), np.arange(len(x))]

    return walk(model, coefs, nearest.shape, features, pick)[0]
