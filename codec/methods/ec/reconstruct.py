"""Decoder-side reconstruction in integers: shrinks toward the prediction and the neighbours,
then an optional loop filter.

Each value moves from its symbol toward its predicted mean and toward the mean of its four
neighbours, by two stored per-channel fractions (`a`, `b` in 1/256). Where it pays (low rates)
a per-image 3x3 cross-channel filter with integer weights in the file (`ec1`'s, in integers)
adds each channel's predicted remaining error. The result is an exact integer in units of
`2**-14` steps; the only float operation is one multiplication by the channel's
step (then an exact power-of-two scaling and a cast), elementwise, so every machine rounds it
the same way.
"""

from __future__ import annotations

import numpy as np

from ..ec1.context import ridge
from ..ec1.loop_filter import FILTER_BITS
from .model import MEAN_BITS

_UNIT = 1 << MEAN_BITS
FIXED_BITS = 8 + MEAN_BITS
"""Reconstructed values are integers in units of `2**-FIXED_BITS` steps."""


def moves(symbols: np.ndarray, means: np.ndarray) -> np.ndarray:
    """`(2, C, H, W)` integer moves (`2**-MEAN_BITS` steps, within one step) toward the
    prediction and toward the four neighbours' mean (edges replicated)."""
    p = np.pad(symbols, ((0, 0), (1, 1), (1, 1)), mode="edge")
    around = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]
    toward_mean = np.clip(means - symbols * _UNIT, -_UNIT, _UNIT)
    toward_neighbours = np.clip((around - 4 * symbols) * (_UNIT // 4), -_UNIT, _UNIT)
    return np.stack([toward_mean, toward_neighbours])


def shrunk(symbols: np.ndarray, means: np.ndarray, shrinks: np.ndarray) -> np.ndarray:
    """Symbols moved by the integer shrinks `(C, 2)` in 1/256, in `2**-FIXED_BITS` steps."""
    a, b = (shrinks[:, k, None, None] for k in range(2))
    toward_mean, toward_neighbours = moves(symbols, means)
    return (symbols << FIXED_BITS) + a * toward_mean + b * toward_neighbours


def filtered(fixed: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`fixed` values plus each channel's filter output, `weights (C, 1 + 9C)` in
    `2**-FILTER_BITS`: a constant, then taps by channel, row, column (edges replicated)."""
    channels, height, width = fixed.shape
    p = np.pad(fixed, ((0, 0), (1, 1), (1, 1)), mode="edge")
    out = fixed.copy()
    for c in range(channels):
        total = np.full((height, width), weights[c, 0] << FIXED_BITS, np.int64)
        for k, (source, dy, dx) in enumerate(np.ndindex(channels, 3, 3)):
            total += weights[c, 1 + k] * p[source, dy : dy + height, dx : dx + width]
        out[c] += total >> FILTER_BITS
    return out


def to_latent(fixed: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The float32 latent of values in `2**-FIXED_BITS` steps: one rounded product a value."""
    scaled = fixed.astype(np.float64) * steps[:, None, None]
    return (scaled * (1.0 / (1 << FIXED_BITS))).astype(np.float32)


def reconstruct(
    symbols: np.ndarray,
    means: np.ndarray,
    steps: np.ndarray,
    shrinks: np.ndarray,
    weights: np.ndarray | None,
) -> np.ndarray:
    """The float32 latent of int64 symbols and means, float16-exact steps `(C,)`, integer
    shrinks `(C, 2)` in 1/256 and filter weights (None: no filter)."""
    fixed = shrunk(symbols, means, shrinks)
    return to_latent(fixed if weights is None else filtered(fixed, weights), steps)


def fit_filter(
    ratio: np.ndarray, fixed: np.ndarray, weight_bits: np.ndarray, lam: float
) -> np.ndarray | None:
    """Least-squares integer filter weights, or None when their code length (`weight_bits` of
    each value -128..127, times `lam`) costs more than their drop in squared error (steps)."""
    values = fixed / float(1 << FIXED_BITS)
    channels, height, width = values.shape
    p = np.pad(values, ((0, 0), (1, 1), (1, 1)), mode="edge")
    taps = [p[c, dy : dy + height, dx : dx + width] for c, dy, dx in np.ndindex(channels, 3, 3)]
    features = np.stack([np.ones((height, width)), *taps]).reshape(len(taps) + 1, -1)
    solution = ridge(features, (ratio - values).reshape(channels, -1))
    weights = np.clip(np.round(solution * (1 << FILTER_BITS)), -128, 127).astype(np.int64)
    after = filtered(fixed, weights) / float(1 << FIXED_BITS)
    gain = np.sum((ratio - values) ** 2) - np.sum((ratio - after) ** 2)
    return weights if gain > lam * weight_bits[weights + 128].sum() else None


def fit_shrinks(ratio: np.ndarray, symbols: np.ndarray, means: np.ndarray) -> np.ndarray:
    """`(C, 2)` least-squares shrinks in 1/256, clipped to 0..255 (encoder only)."""
    move = moves(symbols, means) / float(_UNIT)
    shrinks = np.zeros((len(symbols), 2), np.int64)
    for c in range(len(symbols)):
        a = move[:, c].reshape(2, -1)
        gram = a @ a.T + np.eye(2) * 1e-9
        solution = np.linalg.solve(gram, a @ (ratio[c] - symbols[c]).ravel())
        shrinks[c] = np.clip(np.round(solution * 256), 0, 255)
    return shrinks
