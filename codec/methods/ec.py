"""`ec`: scalar quantization + range coding under a context model (the default method).

Each channel is quantized with its own step (a base step set by `quality`, times a fixed
per-channel weight measured on the TAESD decoder's sensitivity). Symbols are coded channel by
channel, row by row, each row in two phases (even columns, then odd columns), with a
discretized Laplace whose mean and scale are predicted from already-coded neighbours: above,
above-left and above-right in every phase, left and right in the odd phase, and the
co-located 3x3 cross of every channel already coded. The predictor is linear with per-image
fitted fixed-point coefficients; means and scales are computed from integers only, so the
encoder and decoder derive bit-identical models. The encoder picks each symbol among the
nearest level and its two neighbours by distortion + lambda * bits under that model (greedy
RDOQ), then refits. Dequantization moves each value toward its prediction and toward the mean
of its four neighbours, by two stored per-channel fractions of a step (least-squares fitted).
Last, an optional per-image Wiener filter (like a video codec's adaptive loop filter) predicts
each channel's remaining error from the 3x3 neighbourhood of every channel; the encoder keeps it
only when its error reduction is worth its coded weights (it pays at low rates).

`params` (little-endian): C float16 steps, uint16 symbol bound, 2C uint8 shrinks, then for each
channel and phase the int16 mean bias and uint16 scale bias, then a uint8 filter flag. The
payload range-codes all mean weights, then all scale weights, then the filter weights if
flagged (a fixed Laplace), then the symbols. docs/FORMAT.md has details.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import constriction
import numpy as np

from ..errors import LatentFileError
from . import register
from .base import Compressed, QuantizationMethod

MEAN_BITS = 6
"""Means are integers in units of 2**-MEAN_BITS symbols (mean coefficients use the same unit)."""
SCALE_BITS = 7
"""Scale coefficients are integers in units of 2**-SCALE_BITS."""
_MIN_SCALE = 1 << (MEAN_BITS + SCALE_BITS - 5)
_MAX_SCALE = 1 << (MEAN_BITS + SCALE_BITS + 16)
CHANNEL_WEIGHTS = (0.96, 1.18, 1.10, 0.80)
"""Per-channel step multipliers, 1/sqrt of each channel's measured pixel-MSE sensitivity."""
MAX_SYMBOL = 32767
_INT16 = (-32768, 32767)
_UINT16 = (0, 65535)
DEFAULT_QUALITY = 75
_DEFAULT_STEP = 0.45
_NEAR_LOSSLESS_STEP = 0.02
_LARGEST_STEP = 8.0

WEIGHT_SCALE = 8.0
"""Scale of the fixed Laplace (mean 0) that range-codes every predictor weight."""
RDOQ_LAMBDA = 0.1
RDOQ_PASSES = 1
_LAPLACE = constriction.stream.model.QuantizedLaplace
_WEIGHT_MODEL = _LAPLACE(-128, 127, 0.0, WEIGHT_SCALE)
_WEIGHT_SCALE_FIXED = round(WEIGHT_SCALE * (1 << (MEAN_BITS + SCALE_BITS)))
FILTER_BITS = 7
"""Filter weights are integers in units of 2**-FILTER_BITS (corrections in steps)."""


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


def _columns(width: int, phase: int) -> tuple[np.ndarray, ...]:
    """Column indices of a phase and of its left, right and coded-right neighbours (clamped)."""
    x = np.arange(phase, width, 2)
    left = np.maximum(x - 1, 0)
    right = np.minimum(x + 1, width - 1)
    coded_right = np.where(x + 1 < width, x + 1, left)
    return x, left, right, coded_right


def _phases(width: int) -> tuple[int, ...]:
    return (0, 1) if width > 1 else (0,)


def _feature_counts(channel: int, phase: int) -> tuple[int, int]:
    """Numbers of mean and scale features (weights, without the bias) of a channel and phase."""
    spatial = 5 if phase else 3
    return spatial + 5 * channel, spatial + channel


class _Context:
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
        x, left, right, coded_right = _columns(width, phase)
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
class _Coefficients:
    """Fixed-point predictor of one channel and phase: bias first, then one weight a feature."""

    mean: np.ndarray
    scale: np.ndarray


def _linear(weights: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Integer `bias + sum(weight * feature)` over features `(n_features, ...)` (exact)."""
    return weights[0] + (weights[1:] @ feats.reshape(len(feats), -1)).reshape(feats.shape[1:])


def _scale_of(weights: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Integer scales (`2**-(MEAN_BITS + SCALE_BITS)` units), clipped to a sane range."""
    return np.clip(_linear(weights, feats), _MIN_SCALE, _MAX_SCALE)


def _ridge(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ridge least-squares weights `(T, F)` of `targets (T, N)` on `features (F, N)`."""
    gram = features @ features.T
    gram += np.eye(len(gram)) * (1e-6 * np.trace(gram) + 1e-9)
    return np.linalg.solve(gram, features @ targets.T).T


def _lstsq_fixed(
    feats: np.ndarray, target: np.ndarray, unit: int, bias_range: tuple[int, int]
) -> np.ndarray:
    """Ridge least-squares weights (bias first) in fixed point `2**-unit`, clipped to fit."""
    a = np.concatenate([np.ones((1, target.size)), feats.reshape(len(feats), -1)])
    sol = _ridge(a, target.reshape(1, -1).astype(np.float64))[0]
    fixed = np.round(sol * (1 << unit))
    fixed[0] = np.clip(fixed[0], *bias_range)
    fixed[1:] = np.clip(fixed[1:], -128, 127)
    return fixed.astype(np.int64)


def _fit(
    symbols: np.ndarray,
) -> tuple[dict[tuple[int, int], _Coefficients], np.ndarray, np.ndarray]:
    """Per-image predictors of every channel and phase, and the integer means and scales."""
    channels, height, width = symbols.shape
    ctx = _Context(channels, height, width)
    ctx.state[0, :, 1:] = symbols
    means = np.zeros(symbols.shape, np.int64)
    scales = np.zeros(symbols.shape, np.int64)
    coefs: dict[tuple[int, int], _Coefficients] = {}
    for c in range(channels):
        index = {phase: ctx.feature_index(c, phase) for phase in _phases(width)}
        mean_coefs = {}
        for phase, (mean_idx, _) in index.items():
            x = _columns(width, phase)[0]
            feats = ctx.flat[mean_idx]
            mean_coefs[phase] = _lstsq_fixed(feats, symbols[c][:, x] << MEAN_BITS, 0, _INT16)
            means[c][:, x] = _linear(mean_coefs[phase], feats)
        ctx.state[1, c, 1:] = np.abs((symbols[c] << MEAN_BITS) - means[c])
        for phase, (_, scale_idx) in index.items():
            x = _columns(width, phase)[0]
            feats = ctx.flat[scale_idx]
            residuals = ctx.state[1, c, 1:][:, x]
            coefs[(c, phase)] = _Coefficients(
                mean_coefs[phase], _lstsq_fixed(feats, residuals, SCALE_BITS, _UINT16)
            )
            scales[c][:, x] = _scale_of(coefs[(c, phase)].scale, feats)
    return coefs, means, scales


def _laplace_bits(symbols: np.ndarray, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Approximate code lengths (bits) under discretized Laplaces (float: encoder only)."""
    mu, b = _laplace_params(means, scales)
    lo, hi = (symbols - 0.5 - mu) / b, (symbols + 0.5 - mu) / b
    # mass of [lo, hi] under a unit Laplace, computed on the side away from the mean for accuracy
    below = np.where(hi <= 0, 0.5 * (np.exp(hi) - np.exp(lo)), 0.0)
    above = np.where(lo >= 0, 0.5 * (np.exp(-lo) - np.exp(-hi)), 0.0)
    across = np.where((lo < 0) & (hi > 0), 1 - 0.5 * np.exp(lo) - 0.5 * np.exp(-hi), 0.0)
    return -np.log2(np.maximum(below + above + across, 1e-9))


def _rdoq(
    ratio: np.ndarray,
    symbols: np.ndarray,
    coefs: dict[tuple[int, int], _Coefficients],
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
        recon = cands + shrinks[c, 0] * _shrink_toward(mu, cands)
        cost = (ratio[c, y, x] - recon) ** 2 + lam * _laplace_bits(cands, mu, scale)
        return cands[np.argmin(cost, axis=0), np.arange(len(x))]

    ctx, _ = _walk(coefs, symbols.shape, pick)
    return ctx.state[0, :, 1:].copy()


def _walk(
    coefs: dict[tuple[int, int], _Coefficients],
    shape: tuple[int, int, int],
    choose: Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> tuple[_Context, np.ndarray]:
    """Visit each channel's rows and phases in coding order, with the decoder's model.

    `choose(c, y, x, mu, scale)` gives the symbols at columns `x` of row `y` from the predicted
    means and scales there; they become context for everything after. Returns the context
    (holding the chosen symbols) and the predicted means.
    """
    channels, height, width = shape
    ctx = _Context(channels, height, width)
    means = np.zeros(shape, np.int64)
    for c in range(channels):
        phases = [
            (_columns(width, phase)[0], *ctx.feature_index(c, phase), coefs[(c, phase)])
            for phase in _phases(width)
        ]
        for y in range(height):
            for x, mean_idx, scale_idx, coef in phases:
                mu = _linear(coef.mean, ctx.flat[mean_idx[:, y]])
                scale = _scale_of(coef.scale, ctx.flat[scale_idx[:, y]])
                ctx.set_symbols(c, y, x, choose(c, y, x, mu, scale), mu)
                means[c, y, x] = mu
    return ctx, means


def _coding_order(a: np.ndarray) -> np.ndarray:
    """Flatten `(C, H, W)` in decoding order: channel, row, even columns, odd columns."""
    return np.concatenate([a[:, :, 0::2], a[:, :, 1::2]], axis=2).ravel()


def _laplace_params(means: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float Laplace mean and scale (in symbols) of integer means and scales (exact: dyadic)."""
    return means / float(1 << MEAN_BITS), scales / float(1 << (MEAN_BITS + SCALE_BITS))


def _shrink_toward(means: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Direction and size (in steps, within +-1) from each symbol toward its predicted mean."""
    return np.clip(means / float(1 << MEAN_BITS) - symbols, -1.0, 1.0)


def _neighbour_mean(symbols: np.ndarray) -> np.ndarray:
    """Mean of each symbol's four neighbours in its channel (edges replicated)."""
    p = np.pad(symbols.astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="edge")
    return (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]) / 4


def _corrections(symbols: np.ndarray, means: np.ndarray) -> np.ndarray:
    """`(2, C, H, W)` moves (steps, within +-1) toward the prediction and the neighbours' mean."""
    neighbours = np.clip(_neighbour_mean(symbols) - symbols, -1.0, 1.0)
    return np.stack([_shrink_toward(means, symbols), neighbours])


def _shrunk(symbols: np.ndarray, means: np.ndarray, shrinks: np.ndarray) -> np.ndarray:
    """Symbols moved by the two stored per-channel fractions (in steps, float64)."""
    return symbols + np.einsum("ck,kchw->chw", shrinks, _corrections(symbols, means))


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


def _fit_filter(ratio: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """Fixed-point least-squares filter weights, or None when they cost more than they gain.

    Both sides of the trade are in the RDOQ's units: squared error in steps against
    `RDOQ_LAMBDA` times the weights' code length.
    """
    solution = _ridge(_filter_features(values), (ratio - values).reshape(len(values), -1))
    weights = np.clip(np.round(solution * (1 << FILTER_BITS)), -128, 127).astype(np.int64)
    gain = np.sum((ratio - values) ** 2) - np.sum((ratio - _filtered(values, weights)) ** 2)
    cost = _laplace_bits(weights, np.zeros_like(weights), _WEIGHT_SCALE_FIXED).sum()
    return weights if gain > RDOQ_LAMBDA * cost else None


@dataclass(frozen=True)
class Quantized:
    """What the encoder decided: symbols, their integer model parameters, and header values."""

    symbols: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    steps: np.ndarray
    shrinks: np.ndarray
    coefs: dict[tuple[int, int], _Coefficients]
    filter: np.ndarray | None

    def dequantize(self) -> np.ndarray:
        """The float32 latent the decoder reconstructs from these symbols."""
        return _dequantize(self.symbols, self.means, self.steps, self.shrinks, self.filter)


def _dequantize(
    symbols: np.ndarray,
    means: np.ndarray,
    steps: np.ndarray,
    shrinks: np.ndarray,
    weights: np.ndarray | None,
) -> np.ndarray:
    values = _shrunk(symbols, means, shrinks)
    if weights is not None:
        values = _filtered(values, weights)
    return (values * steps[:, None, None]).astype(np.float32)


def channel_steps(quality: int, channels: int) -> np.ndarray:
    """Per-channel steps for `quality`, rounded to float16 as stored in `params`."""
    if channels != len(CHANNEL_WEIGHTS):
        raise ValueError(f"ec codes {len(CHANNEL_WEIGHTS)}-channel latents, got {channels}")
    steps = quality_to_step(quality) * np.asarray(CHANNEL_WEIGHTS)
    return steps.astype(np.float16).astype(np.float64)


def quantize(latent: np.ndarray, quality: int, rdoq: bool = True) -> Quantized:
    """Quantize a `(C, H, W)` latent and fit the context model the coder will use.

    `rdoq=False` keeps the nearest levels: several times faster, a close approximation of the
    file's latent for searches that quantize many candidates (refinement's inner loop).
    """
    latent = np.asarray(latent, dtype=np.float64)
    if latent.ndim != 3 or 0 in latent.shape:
        raise ValueError(f"expected a non-empty (C, H, W) latent, got shape {latent.shape}")
    if not np.isfinite(latent).all():
        raise ValueError("latent has non-finite values")
    steps = channel_steps(quality, latent.shape[0])
    ratio = latent / steps[:, None, None]
    symbols = np.clip(np.round(ratio), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    coefs, means, scales = _fit(symbols)
    shrinks = _fit_shrinks(ratio, symbols, means)
    for _ in range(RDOQ_PASSES if rdoq else 0):
        rdo = np.clip(_rdoq(ratio, symbols, coefs, shrinks, RDOQ_LAMBDA), -MAX_SYMBOL, MAX_SYMBOL)
        coefs, means, scales = _fit(rdo)
        shrinks = _fit_shrinks(ratio, rdo, means)
        symbols = rdo
    weights = _fit_filter(ratio, _shrunk(symbols, means, shrinks))
    return Quantized(symbols, means, scales, steps, shrinks, coefs, weights)


def _fit_shrinks(ratio: np.ndarray, symbols: np.ndarray, means: np.ndarray) -> np.ndarray:
    """`(C, 2)` least-squares weights of the two reconstruction moves, in 1/256 of 0..255."""
    moves = _corrections(symbols, means)
    shrinks = np.zeros((len(symbols), 2))
    for c, (target, a) in enumerate(zip(ratio - symbols, moves.transpose(1, 0, 2, 3), strict=True)):
        a = a.reshape(2, -1)
        gram = a @ a.T + np.eye(2) * 1e-9
        shrinks[c] = np.linalg.solve(gram, a @ target.ravel())
    return np.clip(np.round(shrinks * 256), 0, 255) / 256


def side_weights(q: Quantized) -> list[np.ndarray]:
    """The range-coded weights in payload order: all mean weights, all scale weights (biases
    left out, key order), then the filter's if it has one."""
    keys = sorted(q.coefs)
    parts = [
        np.concatenate([q.coefs[k].mean[1:] for k in keys]),
        np.concatenate([q.coefs[k].scale[1:] for k in keys]),
    ]
    return parts if q.filter is None else [*parts, q.filter.ravel()]


def _pack(q: Quantized, bound: int) -> bytes:
    parts = [q.steps.astype("<f2").tobytes(), struct.pack("<H", bound)]
    parts.append(np.round(q.shrinks * 256).astype(np.uint8).tobytes())
    parts += [struct.pack("<hH", q.coefs[k].mean[0], q.coefs[k].scale[0]) for k in sorted(q.coefs)]
    parts.append(struct.pack("<B", q.filter is not None))
    return b"".join(parts)


def _unpack(
    params: bytes, shape: tuple[int, int, int]
) -> tuple[np.ndarray, int, np.ndarray, list, bool]:
    """Steps, symbol bound, shrinks, the `(key, mean bias, scale bias)` of each predictor, and
    whether a filter follows. Params one byte short (no filter flag) are the layout written
    before the filter existed, and read as unfiltered."""
    channels, _, width = shape
    keys = [(c, p) for c in range(channels) for p in _phases(width)]
    size = 4 * channels + 2 + 4 * len(keys) + 1
    if len(params) not in (size - 1, size):
        raise LatentFileError(f"ec params are {len(params)} bytes, expected {size}")
    flag = params[size - 1] if len(params) == size else 0
    if flag > 1:
        raise LatentFileError(f"ec filter flag is {flag}, expected 0 or 1")
    steps = np.frombuffer(params, "<f2", channels).astype(np.float64)
    if not (np.isfinite(steps).all() and (steps > 0).all()):
        raise LatentFileError("ec params hold a non-positive or non-finite step")
    (bound,) = struct.unpack_from("<H", params, 2 * channels)
    if not 1 <= bound <= MAX_SYMBOL + 1:
        raise LatentFileError(f"ec symbol bound {bound} out of range")
    offset = 2 * channels + 2
    shrinks = np.frombuffer(params, np.uint8, 2 * channels, offset).reshape(channels, 2) / 256
    offset += 2 * channels
    biases = [(k, *struct.unpack_from("<hH", params, offset + 4 * i)) for i, k in enumerate(keys)]
    return steps, bound, shrinks, biases, bool(flag)


def _decode_coefficients(
    decoder: constriction.stream.queue.RangeDecoder, biases: list
) -> dict[tuple[int, int], _Coefficients]:
    """Read the range-coded weights that precede the symbols and join them to their biases."""
    counts = [_feature_counts(c, p) for (c, p), _, _ in biases]
    mean_w = decoder.decode(_WEIGHT_MODEL, sum(n for n, _ in counts)).astype(np.int64)
    scale_w = decoder.decode(_WEIGHT_MODEL, sum(n for _, n in counts)).astype(np.int64)
    coefs, m, s = {}, 0, 0
    for (key, mean_bias, scale_bias), (n_mean, n_scale) in zip(biases, counts, strict=True):
        coefs[key] = _Coefficients(
            np.concatenate([[mean_bias], mean_w[m : m + n_mean]]),
            np.concatenate([[scale_bias], scale_w[s : s + n_scale]]),
        )
        m, s = m + n_mean, s + n_scale
    return coefs


class EntropyCodedMethod(QuantizationMethod):
    """Per-channel scalar quantization, range-coded under a fitted neighbour context model."""

    name = "ec"
    id = 3
    default_quality = DEFAULT_QUALITY

    def compress(self, latent: np.ndarray, quality: int) -> Compressed:
        """Code a float32 latent `(C, H, W)` at `quality` (1 = smallest, 100 = best)."""
        q = quantize(latent, quality)
        means, scales = _laplace_params(q.means, q.scales)
        bound = int(np.abs(q.symbols).max()) + 1
        encoder = constriction.stream.queue.RangeEncoder()
        for weights in side_weights(q):
            encoder.encode(weights.astype(np.int32), _WEIGHT_MODEL)
        encoder.encode(
            _coding_order(q.symbols).astype(np.int32),
            _LAPLACE(-bound, bound),
            _coding_order(means),
            _coding_order(scales),
        )
        return Compressed(_pack(q, bound), encoder.get_compressed().astype("<u4").tobytes())

    def decompress(self, params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """The float32 latent `(C, H, W)` that `compress` coded."""
        steps, bound, shrinks, biases, filtered = _unpack(params, shape)
        channels = shape[0]
        if len(payload) % 4:
            raise LatentFileError("ec payload is not a whole number of 32-bit words")
        model = _LAPLACE(-bound, bound)
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4"))
        try:
            coefs = _decode_coefficients(decoder, biases)
            weights = None
            if filtered:
                taps = channels * (1 + 9 * channels)
                weights = decoder.decode(_WEIGHT_MODEL, taps).astype(np.int64).reshape(channels, -1)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise LatentFileError(f"ec payload does not decode: {exc}") from exc

        def decode_row(
            c: int, y: int, x: np.ndarray, mu: np.ndarray, scale: np.ndarray
        ) -> np.ndarray:
            try:
                return decoder.decode(model, *_laplace_params(mu, scale)).astype(np.int64)
            except (ValueError, RuntimeError, AssertionError) as exc:
                raise LatentFileError(f"ec payload does not decode: {exc}") from exc

        ctx, means = _walk(coefs, shape, decode_row)
        if not decoder.maybe_exhausted():
            raise LatentFileError("ec payload has data past the coded symbols")
        return _dequantize(ctx.state[0, :, 1:], means, steps, shrinks, weights)


register(EntropyCodedMethod())
