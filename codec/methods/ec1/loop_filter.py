"""Decoder-side reconstruction: shrinks toward predictions and neighbours, then a loop filter.

Dequantization moves each value toward its prediction and toward the mean of its four
neighbours, by two stored per-channel fractions of a step (least-squares fitted). Last, an
optional per-image Wiener filter (like a video codec's adaptive loop filter) predicts each
channel's remaining error from the 3x3 neighbourhood of every channel; the encoder keeps it only
when its error reduction is worth its coded weights (it pays at low rates).
"""

from __future__ import annotations

import numpy as np

from .context import MEAN_BITS, ridge, weight_bits

FILTER_BITS = 7
"""Filter weights are integers in units of 2**-FILTER_BITS (corrections in steps)."""


def shrink_toward(means: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Direction and size (in steps, within +-1) from each symbol toward its predicted mean."""
    return np.clip(means / float(1 << MEAN_BITS) - symbols, -1.0, 1.0)


def _neighbour_mean(symbols: np.ndarray) -> np.ndarray:
    """Mean of each symbol's four neighbours in its channel (edges replicated)."""
    p = np.pad(symbols.astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="edge")
    return (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]) / 4


def _corrections(symbols: np.ndarray, means: np.ndarray) -> np.ndarray:
    """`(2, C, H, W)` moves (steps, within +-1) toward the prediction and the neighbours' mean."""
    neighbours = np.clip(_neighbour_mean(symbols) - symbols, -1.0, 1.0)
    return np.stack([shrink_toward(means, symbols), neighbours])


def shrunk(symbols: np.ndarray, means: np.ndarray, shrinks: np.ndarray) -> np.ndarray:
    """Symbols moved by the two stored per-channel fractions (in steps, float64)."""
    return symbols + np.einsum("ck,kchw->chw", shrinks, _corrections(symbols, means))


def fit_shrinks(ratio: np.ndarray, symbols: np.ndarray, means: np.ndarray) -> np.ndarray:
    """`(C, 2)` least-squares weights of the two reconstruction moves, in 1/256 of 0..255."""
    moves = _corrections(symbols, means)
    shrinks = np.zeros((len(symbols), 2))
    for c, (target, a) in enumerate(zip(ratio - symbols, moves.transpose(1, 0, 2, 3), strict=True)):
        a = a.reshape(2, -1)
        gram = a @ a.T + np.eye(2) * 1e-9
        shrinks[c] = np.linalg.solve(gram, a @ target.ravel())
    return np.clip(np.round(shrinks * 256), 0, 255) / 256


def _filter_features(values: np.ndarray) -> np.ndarray:
    """`(1 + 9C, H*W)`: a constant, then each channel's 3x3 neighbourhood (edges replicated)."""
    channels, height, width = values.shape
    p = np.pad(values, ((0, 0), (1, 1), (1, 1)), mode="edge")
    taps = [p[c, dy : dy + height, dx : dx + width] for c in range(channels)
            for dy in range(3) for dx in range(3)]  # fmt: skip
    return np.stack([np.ones((height, width)), *taps]).reshape(len(taps) + 1, -1)


def _filtered(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`values` (in steps) plus each channel's filter output `weights (C, 1 + 9C)`."""
    correction = weights @ _filter_features(values) / float(1 << FILTER_BITS)
    return values + correction.reshape(values.shape)


def fit_filter(ratio: np.ndarray, values: np.ndarray, lam: float) -> np.ndarray | None:
    """Fixed-point least-squares filter weights, or None when they cost more than they gain.

    The trade is in the RDOQ's units: the drop in squared error (in steps) against `lam` times
    the weights' code length.
    """
    solution = ridge(_filter_features(values), (ratio - values).reshape(len(values), -1))
    weights = np.clip(np.round(solution * (1 << FILTER_BITS)), -128, 127).astype(np.int64)
    gain = np.sum((ratio - values) ** 2) - np.sum((ratio - _filtered(values, weights)) ** 2)
    return weights if gain > lam * weight_bits(weights).sum() else None


def reconstruct(
    symbols: np.ndarray,
    means: np.ndarray,
    steps: np.ndarray,
    shrinks: np.ndarray,
    weights: np.ndarray | None,
) -> np.ndarray:
    """The float32 latent the decoder makes of symbols, their integer means, the per-channel
    steps and shrinks, and the filter's weights (None: no filter)."""
    values = shrunk(symbols, means, shrinks)
    if weights is not None:
        values = _filtered(values, weights)
    return (values * steps[:, None, None]).astype(np.float32)
