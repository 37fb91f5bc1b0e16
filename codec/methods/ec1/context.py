"""The per-image linear context model: neighbour features, fixed-point fit, Laplace parameters.

Symbols are coded channel by channel, row by row, each row in two phases (even columns, then odd
columns), each under a discretized Laplace whose mean and scale are predicted from already-coded
neighbours: above, above-left and above-right in every phase, left and right in the odd phase,
and the co-located 3x3 cross of every channel already coded. The predictor is linear with
per-image fitted fixed-point coefficients; means and scales are computed from integers only, so
the encoder and decoder derive bit-identical models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MEAN_BITS = 6
"""Means are integers in units of 2**-MEAN_BITS symbols (mean coefficients use the same unit)."""
SCALE_BITS = 7
"""Scale coefficients are integers in units of 2**-SCALE_BITS."""
_MIN_SCALE = 1 << (MEAN_BITS + SCALE_BITS - 5)
_MAX_SCALE = 1 << (MEAN_BITS + SCALE_BITS + 16)
INT16 = (-32768, 32767)
_UINT16 = (0, 65535)
WEIGHT_SCALE = 8.0
"""Scale of the fixed Laplace (mean 0) that range-codes every predictor and filter weight."""
_WEIGHT_SCALE_FIXED = round(WEIGHT_SCALE * (1 << (MEAN_BITS + SCALE_BITS)))


def columns(width: int, phase: int) -> tuple[np.ndarray, ...]:
    """Column indices of a phase and of its left, right and coded-right neighbours (clamped)."""
    x = np.arange(phase, width, 2)
    left = np.maximum(x - 1, 0)
    right = np.minimum(x + 1, width - 1)
    coded_right = np.where(x + 1 < width, x + 1, left)
    return x, left, right, coded_right


def phases(width: int) -> tuple[int, ...]:
    """The phases of a row `width` columns wide: even and odd columns, or even only."""
    return (0, 1) if width > 1 else (0,)


def feature_counts(channel: int, phase: int) -> tuple[int, int]:
    """Numbers of mean and scale features (weights, without the bias) of a channel and phase."""
    spatial = 5 if phase else 3
    return spatial + 5 * channel, spatial + channel


class Context:
    """Coded symbols and their absolute mean residuals (`2**-MEAN_BITS` units), by channel.

    Both live in one int64 buffer, each plane top-padded with a zero row, so that a feature is
    a flat index into it and a whole row of features is one gather.
    """

    def __init__(self, channels: int, height: int, width: int) -> None:
        self.shape = (channels, height, width)
        self.state = np.zeros((2, channels, height + 1, width), np.int64)
        self.flat = self.state.reshape(-1)

    def set_symbols(
        self, channel: int, row: int, x: np.ndarray, symbols: np.ndarray, means: np.ndarray
    ) -> None:
        """Store decoded symbols of one row of a channel at columns `x`, and their residuals."""
        self.state[0, channel, row + 1, x] = symbols
        self.state[1, channel, row + 1, x] = np.abs(symbols * (1 << MEAN_BITS) - means)

    def feature_index(self, channel: int, phase: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices `(features, H, cols)` of the mean and the scale features of a phase.

        Mean: above, above-left, above-right; in the odd phase also left and right; for each
        channel already coded its co-located symbol and the four around it. Scale: the residuals
        of the same spatial neighbours and of the co-located symbols of earlier channels.
        Neighbours past an edge are clamped to the nearest coded one; above the top row is zero.
        """
        channels, height, width = self.shape
        x, left, right, coded_right = columns(width, phase)
        rows = np.arange(height)[:, None]
        above, here = rows, rows + 1
        up, down = np.maximum(rows - 1, 0) + 1, np.minimum(rows + 1, height - 1) + 1

        def at(kind: int, ch: int, row: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return ((kind * channels + ch) * (height + 1) + row) * width + cols

        spatial = [(above, x), (above, left), (above, right)]
        if phase:
            spatial += [(here, left), (here, coded_right)]
        mean = [at(0, channel, r, cols) for r, cols in spatial]
        scale = [at(1, channel, r, cols) for r, cols in spatial]
        for prev in range(channel):
            cross = [(here, x), (up, x), (down, x), (here, left), (here, right)]
            mean += [at(0, prev, r, cols) for r, cols in cross]
            scale.append(at(1, prev, here, x))
        return np.stack(mean), np.stack(scale)


@dataclass(frozen=True)
class Coefficients:
    """Fixed-point predictor of one channel and phase: bias first, then one weight a feature."""

    mean: np.ndarray
    scale: np.ndarray


Predictors = dict[tuple[int, int], Coefficients]
"""The predictors of an image, keyed `(channel, phase)`."""


def linear(weights: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Integer `bias + sum(weight * feature)` over features `(n_features, ...)` (exact)."""
    return weights[0] + (weights[1:] @ feats.reshape(len(feats), -1)).reshape(feats.shape[1:])


def _scale_of(weights: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Integer scales (`2**-(MEAN_BITS + SCALE_BITS)` units), clipped to a sane range."""
    return np.clip(linear(weights, feats), _MIN_SCALE, _MAX_SCALE)


def ridge(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ridge least-squares weights `(T, F)` of `targets (T, N)` on `features (F, N)`."""
    gram = features @ features.T
    gram += np.eye(len(gram)) * (1e-6 * np.trace(gram) + 1e-9)
    return np.linalg.solve(gram, features @ targets.T).T


def lstsq_fixed(
    feats: np.ndarray, target: np.ndarray, unit: int, bias_range: tuple[int, int]
) -> np.ndarray:
    """Ridge least-squares weights (bias first) in fixed point `2**-unit`, clipped to fit."""
    a = np.concatenate([np.ones((1, target.size)), feats.reshape(len(feats), -1)])
    sol = ridge(a, target.reshape(1, -1).astype(np.float64))[0]
    fixed = np.round(sol * (1 << unit))
    fixed[0] = np.clip(fixed[0], *bias_range)
    fixed[1:] = np.clip(fixed[1:], -128, 127)
    return fixed.astype(np.int64)


def fit(symbols: np.ndarray) -> tuple[Predictors, np.ndarray, np.ndarray]:
    """Per-image predictors of every channel and phase, and the integer means and scales."""
    channels, height, width = symbols.shape
    ctx = Context(channels, height, width)
    ctx.state[0, :, 1:] = symbols
    means = np.zeros(symbols.shape, np.int64)
    scales = np.zeros(symbols.shape, np.int64)
    coefs: Predictors = {}
    for c in range(channels):
        index = {phase: ctx.feature_index(c, phase) for phase in phases(width)}
        mean_coefs = {}
        for phase, (mean_idx, _) in index.items():
            x = columns(width, phase)[0]
            feats = ctx.flat[mean_idx]
            mean_coefs[phase] = lstsq_fixed(feats, symbols[c][:, x] << MEAN_BITS, 0, INT16)
            means[c][:, x] = linear(mean_coefs[phase], feats)
        ctx.state[1, c, 1:] = np.abs((symbols[c] << MEAN_BITS) - means[c])
        for phase, (_, scale_idx) in index.items():
            x = columns(width, phase)[0]
            feats = ctx.flat[scale_idx]
            residuals = ctx.state[1, c, 1:][:, x]
            coefs[(c, phase)] = Coefficients(
                mean_coefs[phase], lstsq_fixed(feats, residuals, SCALE_BITS, _UINT16)
            )
            scales[c][:, x] = _scale_of(coefs[(c, phase)].scale, feats)
    return coefs, means, scales


def walk(
    coefs: Predictors,
    shape: tuple[int, int, int],
    choose: Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Visit each channel's rows and phases in coding order, with the decoder's model.

    `choose(c, y, x, mu, scale)` gives the symbols at columns `x` of row `y` from the predicted
    means and scales there; they become context for everything after. Returns the chosen
    symbols and the predicted means, both `shape`.
    """
    channels, height, width = shape
    ctx = Context(channels, height, width)
    means = np.zeros(shape, np.int64)
    for c in range(channels):
        per_phase = [
            (columns(width, phase)[0], *ctx.feature_index(c, phase), coefs[(c, phase)])
            for phase in phases(width)
        ]
        for y in range(height):
            for x, mean_idx, scale_idx, coef in per_phase:
                mu = linear(coef.mean, ctx.flat[mean_idx[:, y]])
                scale = _scale_of(coef.scale, ctx.flat[scale_idx[:, y]])
                ctx.set_symbols(c, y, x, choose(c, y, x, mu, scale), mu)
                means[c, y, x] = mu
    return ctx.state[0, :, 1:], means


def laplace_params(means: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float Laplace mean and scale (in symbols) of integer means and scales (exact: dyadic)."""
    return means / float(1 << MEAN_BITS), scales / float(1 << (MEAN_BITS + SCALE_BITS))


def laplace_bits(symbols: np.ndarray, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Approximate code lengths (bits) under discretized Laplaces (float: encoder only)."""
    mu, b = laplace_params(means, scales)
    lo, hi = (symbols - 0.5 - mu) / b, (symbols + 0.5 - mu) / b
    # mass of [lo, hi] under a unit Laplace, computed on the side away from the mean for accuracy
    below = np.where(hi <= 0, 0.5 * (np.exp(hi) - np.exp(lo)), 0.0)
    above = np.where(lo >= 0, 0.5 * (np.exp(-lo) - np.exp(-hi)), 0.0)
    across = np.where((lo < 0) & (hi > 0), 1 - 0.5 * np.exp(lo) - 0.5 * np.exp(-hi), 0.0)
    return -np.log2(np.maximum(below + above + across, 1e-9))


def weight_bits(weights: np.ndarray) -> np.ndarray:
    """Approximate code lengths (bits) of weights under the fixed weight Laplace."""
    return laplace_bits(weights, np.zeros_like(weights), _WEIGHT_SCALE_FIXED)
