"""Per-channel scalar quantization: steps by quality, nearest levels, greedy RDOQ.

Each channel is quantized with its own step (a base step set by `quality`, times a fixed
per-channel weight measured on the TAESD decoder's sensitivity). The encoder picks each symbol
among the nearest level and its two neighbours by distortion + lambda * bits under the context
model (greedy RDOQ), then refits the model, the shrinks and the loop filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .context import Predictors, fit, laplace_bits, walk
from .loop_filter import fit_filter, fit_shrinks, reconstruct, shrink_toward, shrunk

CHANNEL_WEIGHTS = (0.96, 1.18, 1.10, 0.80)
"""Per-channel step multipliers, 1/sqrt of each channel's measured pixel-MSE sensitivity."""
MAX_SYMBOL = 32767
"""Largest symbol magnitude (the symbol bound in `params` is at most one more)."""
DEFAULT_QUALITY = 75
_DEFAULT_STEP = 0.45
_NEAR_LOSSLESS_STEP = 0.02
_LARGEST_STEP = 8.0
RDOQ_LAMBDA = 0.1
RDOQ_PASSES = 1


def quality_to_step(quality: int) -> float:
    """Base quantization step (scaled latent units) for `quality` in 1..100.

    Log-linear on each side of the default quality: from `_LARGEST_STEP` at 1 to
    `_DEFAULT_STEP` at `DEFAULT_QUALITY` and to `_NEAR_LOSSLESS_STEP` at 100.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if quality <= DEFAULT_QUALITY:
        t = (DEFAULT_QUALITY - quality) / (DEFAULT_QUALITY - 1)
        return float(_DEFAULT_STEP * (_LARGEST_STEP / _DEFAULT_STEP) ** t)
    t = (quality - DEFAULT_QUALITY) / (100 - DEFAULT_QUALITY)
    return float(_DEFAULT_STEP * (_NEAR_LOSSLESS_STEP / _DEFAULT_STEP) ** t)


def channel_steps(quality: int, channels: int) -> np.ndarray:
    """Per-channel steps for `quality`, rounded to float16 as stored in `params`."""
    if channels != len(CHANNEL_WEIGHTS):
        raise ValueError(f"ec codes {len(CHANNEL_WEIGHTS)}-channel latents, got {channels}")
    steps = quality_to_step(quality) * np.asarray(CHANNEL_WEIGHTS)
    return steps.astype(np.float16).astype(np.float64)


def checked(latent: np.ndarray) -> np.ndarray:
    """`latent` as float64, a `ValueError` unless it is a non-empty finite `(C, H, W)` array."""
    latent = np.asarray(latent, dtype=np.float64)
    if latent.ndim != 3 or 0 in latent.shape:
        raise ValueError(f"expected a non-empty (C, H, W) latent, got shape {latent.shape}")
    if not np.isfinite(latent).all():
        raise ValueError("latent has non-finite values")
    return latent


@dataclass(frozen=True)
class Quantized:
    """What the encoder decided: symbols, their integer model parameters, and header values."""

    symbols: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    steps: np.ndarray
    shrinks: np.ndarray
    coefs: Predictors
    filter: np.ndarray | None

    def dequantize(self) -> np.ndarray:
        """The float32 latent the decoder reconstructs from these symbols."""
        return reconstruct(self.symbols, self.means, self.steps, self.shrinks, self.filter)


def quantize(latent: np.ndarray, quality: int, rdoq: bool = True) -> Quantized:
    """Quantize a `(C, H, W)` latent and fit the context model the coder will use.

    `rdoq=False` keeps the nearest levels: several times faster, a close approximation of the
    file's latent for searches that quantize many candidates (refinement's inner loop).
    """
    latent = checked(latent)
    steps = channel_steps(quality, latent.shape[0])
    ratio = latent / steps[:, None, None]
    symbols = np.clip(np.round(ratio), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    coefs, means, scales = fit(symbols)
    shrinks = fit_shrinks(ratio, symbols, means)
    for _ in range(RDOQ_PASSES if rdoq else 0):
        rdo = np.clip(_rdoq(ratio, symbols, coefs, shrinks, RDOQ_LAMBDA), -MAX_SYMBOL, MAX_SYMBOL)
        coefs, means, scales = fit(rdo)
        shrinks = fit_shrinks(ratio, rdo, means)
        symbols = rdo
    weights = fit_filter(ratio, shrunk(symbols, means, shrinks), RDOQ_LAMBDA)
    return Quantized(symbols, means, scales, steps, shrinks, coefs, weights)


def _rdoq(
    ratio: np.ndarray,
    symbols: np.ndarray,
    coefs: Predictors,
    shrinks: np.ndarray,
    lam: float,
) -> np.ndarray:
    """Greedy rate-distortion choice of each symbol among the nearest level and its neighbours.

    Rows are visited in coding order with the model the decoder will see, and each symbol takes
    the level minimising squared error (in steps, after shrink) plus `lam` times its code length.
    """
    offsets = np.array([-1, 0, 1])[:, None]

    def pick(c: int, y: int, x: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        cands = symbols[c, y, x] + offsets
        recon = cands + shrinks[c, 0] * shrink_toward(mu, cands)
        cost = (ratio[c, y, x] - recon) ** 2 + lam * laplace_bits(cands, mu, scale)
        return cands[np.argmin(cost, axis=0), np.arange(len(x))]

    return walk(coefs, symbols.shape, pick)[0]
