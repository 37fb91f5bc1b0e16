"""The coding order and the model's inputs: channel by channel, row by row, two phases a row.

The context (already coded symbols and their absolute residuals), the neighbour layout and the
per-image linear mean predictor are `ec1`'s (`ec.context`): above, above-left, above-right, in
the odd phase also left and right, and each earlier channel's co-located symbol and its four
neighbours. `fit_means` fits the predictor and `predict` evaluates the model everywhere at once
from known symbols (the encoder); `walk` visits rows in coding order, each row's symbols chosen
(or decoded) before the next row's model is evaluated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ec1.context import INT16, Context, columns, linear, lstsq_fixed, phases
from .model import MEAN_BITS, EntropyModel, clip_means, spatial_count

Means = dict[tuple[int, int], np.ndarray]
"""Per-image mean predictors keyed `(channel, phase)`: int64 bias, then one weight a feature."""


def scale_inputs(
    residuals: np.ndarray, symbols: np.ndarray, means: np.ndarray, step: int, spatial: int
) -> np.ndarray:
    """Network inputs `(F, ...)`: the neighbours' residuals, the spatial neighbours' magnitudes
    (`2**-MEAN_BITS` units), `|mu|` and the channel's step feature."""
    magnitudes = np.abs(symbols[:spatial]) << MEAN_BITS
    constant = np.full((1, *means.shape), step, np.int64)
    return np.concatenate([residuals, magnitudes, np.abs(means)[None], constant])


def _layout(ctx: Context, channel: int, width: int) -> dict[int, tuple[np.ndarray, ...]]:
    return {p: (columns(width, p)[0], *ctx.feature_index(channel, p)) for p in phases(width)}


def fit_means(symbols: np.ndarray) -> tuple[Means, np.ndarray]:
    """Least-squares fixed-point mean predictors of an image, and their integer means."""
    channels, height, width = symbols.shape
    ctx = Context(channels, height, width)
    ctx.state[0, :, 1:] = symbols
    means = np.zeros(symbols.shape, np.int64)
    coefs: Means = {}
    for c in range(channels):
        for p, (x, mean_idx, _) in _layout(ctx, c, width).items():
            feats = ctx.flat[mean_idx]
            coefs[(c, p)] = lstsq_fixed(feats, symbols[c][:, x] << MEAN_BITS, 0, INT16)
            means[c][:, x] = clip_means(linear(coefs[(c, p)], feats))
    return coefs, means


def predict(
    model: EntropyModel, coefs: Means, symbols: np.ndarray, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Integer means and scales of every symbol of a `(C, H, W)` array, as the decoder will
    compute them (`steps`: each channel's step feature)."""
    channels, height, width = symbols.shape
    ctx = Context(channels, height, width)
    ctx.state[0, :, 1:] = symbols
    means = np.zeros(symbols.shape, np.int64)
    scales = np.zeros(symbols.shape, np.int64)
    for c in range(channels):
        layout = _layout(ctx, c, width)
        for p, (x, mean_idx, _) in layout.items():
            means[c][:, x] = clip_means(linear(coefs[(c, p)], ctx.flat[mean_idx]))
        ctx.state[1, c, 1:] = np.abs((symbols[c] << MEAN_BITS) - means[c])
        for p, (x, mean_idx, scale_idx) in layout.items():
            inputs = scale_inputs(ctx.flat[scale_idx], ctx.flat[mean_idx], means[c][:, x],
                                  steps[c], spatial_count(p))  # fmt: skip
            scales[c][:, x] = model.predictors[(c, p)].scales(inputs)
    return means, scales


def walk(
    model: EntropyModel,
    coefs: Means,
    shape: tuple[int, int, int],
    steps: np.ndarray,
    choose: Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Visit each channel's rows and phases in coding order with the decoder's model.

    `choose(c, y, x, mu, scale)` gives the symbols at columns `x` of row `y` from their integer
    means and scales; they become context for everything after. Returns the symbols and the
    means, both `shape`.
    """
    channels, height, width = shape
    ctx = Context(channels, height, width)
    means = np.zeros(shape, np.int64)
    for c in range(channels):
        layout = [(x, mean_idx, scale_idx, coefs[(c, p)], model.predictors[(c, p)],
                   spatial_count(p)) for p, (x, mean_idx, scale_idx)
                  in _layout(ctx, c, width).items()]  # fmt: skip
        for y in range(height):
            for x, mean_idx, scale_idx, coef, predictor, spatial in layout:
                feats = ctx.flat[mean_idx[:, y]]
                mu = clip_means(linear(coef, feats))
                inputs = scale_inputs(ctx.flat[scale_idx[:, y]], feats, mu, steps[c], spatial)
                ctx.set_symbols(c, y, x, choose(c, y, x, mu, predictor.scales(inputs)), mu)
                means[c, y, x] = mu
    return ctx.state[0, :, 1:], means
