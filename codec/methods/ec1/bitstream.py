"""The `ec` file layout: `params` packing and the range coding of weights and symbols.

`params` (little-endian): C float16 steps, uint16 symbol bound, 2C uint8 shrinks, then for each
channel and phase the int16 mean bias and uint16 scale bias, then a uint8 filter flag. The
payload range-codes all mean weights, then all scale weights, then the filter weights if
flagged (a fixed Laplace), then the symbols. docs/FORMAT.md has details.
"""

from __future__ import annotations

import struct

import constriction
import numpy as np

from ...errors import LatentFileError
from ..base import Compressed
from .context import (
    WEIGHT_SCALE,
    Coefficients,
    Predictors,
    feature_counts,
    laplace_params,
    phases,
    walk,
)
from .loop_filter import reconstruct
from .quantizer import MAX_SYMBOL, Quantized

_LAPLACE = constriction.stream.model.QuantizedLaplace
WEIGHT_MODEL = _LAPLACE(-128, 127, 0.0, WEIGHT_SCALE)
"""The fixed model of every range-coded weight."""


def side_weights(q: Quantized) -> list[np.ndarray]:
    """The range-coded weights in payload order: all mean weights, all scale weights (biases
    left out, key order), then the filter's if it has one."""
    keys = sorted(q.coefs)
    parts = [
        np.concatenate([q.coefs[k].mean[1:] for k in keys]),
        np.concatenate([q.coefs[k].scale[1:] for k in keys]),
    ]
    return parts if q.filter is None else [*parts, q.filter.ravel()]


def _coding_order(a: np.ndarray) -> np.ndarray:
    """Flatten `(C, H, W)` in decoding order: channel, row, even columns, odd columns."""
    return np.concatenate([a[:, :, 0::2], a[:, :, 1::2]], axis=2).ravel()


def encode(q: Quantized) -> Compressed:
    """The params and range-coded payload of a quantized latent."""
    means, scales = laplace_params(q.means, q.scales)
    bound = int(np.abs(q.symbols).max()) + 1
    encoder = constriction.stream.queue.RangeEncoder()
    for weights in side_weights(q):
        encoder.encode(weights.astype(np.int32), WEIGHT_MODEL)
    encoder.encode(
        _coding_order(q.symbols).astype(np.int32),
        _LAPLACE(-bound, bound),
        _coding_order(means),
        _coding_order(scales),
    )
    return Compressed(_pack(q, bound), encoder.get_compressed().astype("<u4").tobytes())


def decode(params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """The float32 latent `(C, H, W)` that `encode` coded; `LatentFileError` if it does not
    parse."""
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
            weights = decoder.decode(WEIGHT_MODEL, taps).astype(np.int64).reshape(channels, -1)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise LatentFileError(f"ec payload does not decode: {exc}") from exc

    def decode_row(c: int, y: int, x: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        try:
            return decoder.decode(model, *laplace_params(mu, scale)).astype(np.int64)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise LatentFileError(f"ec payload does not decode: {exc}") from exc

    symbols, means = walk(coefs, shape, decode_row)
    if not decoder.maybe_exhausted():
        raise LatentFileError("ec payload has data past the coded symbols")
    return reconstruct(symbols, means, steps, shrinks, weights)


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
    keys = [(c, p) for c in range(channels) for p in phases(width)]
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
) -> Predictors:
    """Read the range-coded weights that precede the symbols and join them to their biases."""
    counts = [feature_counts(c, p) for (c, p), _, _ in biases]
    mean_w = decoder.decode(WEIGHT_MODEL, sum(n for n, _ in counts)).astype(np.int64)
    scale_w = decoder.decode(WEIGHT_MODEL, sum(n for _, n in counts)).astype(np.int64)
    coefs, m, s = {}, 0, 0
    for (key, mean_bias, scale_bias), (n_mean, n_scale) in zip(biases, counts, strict=True):
        coefs[key] = Coefficients(
            np.concatenate([[mean_bias], mean_w[m : m + n_mean]]),
            np.concatenate([[scale_bias], scale_w[s : s + n_scale]]),
        )
        m, s = m + n_mean, s + n_scale
    return coefs
