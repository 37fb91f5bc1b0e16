"""The `ec` (version 2) file layout: `params` packing, range coding of symbols and raw bits.

`params` (little-endian): a uint8 model id, C float16 steps, 2C uint8 shrinks, C int8
scale-index offsets, per predictor (channel, then phase) its int16 mean bias, a uint8 filter
flag. The payload is a uint32 word count `N`, `N` words of one constriction queue range-coder
stream (the predictors' weights, the filter's if flagged, then the symbols), then the escapes'
raw bits, least significant first, packed little-endian in bytes (zero padding).
docs/FORMAT.md has details.

The range coder takes each symbol's probabilities as float64 numbers `f / 2**16` from the
integer tables. constriction's `Categorical(perfect=False)` turns them into its fixed-point
distribution with IEEE-754 sums and products of such dyadic numbers; these are exact (every
intermediate fits 53 bits), so the quantized tables, and the bits, are the same on any machine.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import constriction
import numpy as np

from ...errors import LatentFileError
from ..base import Compressed
from ..ec1.context import feature_counts, phases
from .model import (
    MAX_SYMBOL,
    EntropyModel,
    from_alphabet,
    split_mean,
    step_feature,
    to_alphabet,
)
from .reconstruct import reconstruct
from .walk import walk

if TYPE_CHECKING:
    from .quantizer import Quantized

_FAMILY = constriction.stream.model.Categorical(perfect=False)
_COUNT = struct.Struct("<I")
MAX_OFFSET = 16
"""Largest magnitude of a per-channel scale-index offset."""


def coding_order(a: np.ndarray) -> np.ndarray:
    """Flatten `(..., H, W)` in decoding order: row, even columns, odd columns."""
    return np.concatenate([a[..., 0::2], a[..., 1::2]], axis=-1).ravel()


def _pack_bits(raw: np.ndarray, counts: np.ndarray) -> bytes:
    """`counts[i]` low bits of each `raw[i]`, least significant first, packed little-endian."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    position = np.arange(int(counts.sum())) - starts
    bits = (np.repeat(raw, counts) >> position) & 1
    return np.packbits(bits.astype(np.uint8), bitorder="little").tobytes()


class _BitReader:
    """Reads the raw bits `_pack_bits` wrote (`LatentFileError` past the end)."""

    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little").astype(np.int64)
        self.used = 0

    def read(self, counts: np.ndarray) -> np.ndarray:
        total = int(counts.sum())
        if self.used + total > len(self.bits):
            raise LatentFileError("ec payload ends inside its raw bits")
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        position = np.arange(total) - starts
        values = np.zeros(len(counts), np.int64)
        owner = np.repeat(np.arange(len(counts)), counts)
        np.add.at(values, owner, self.bits[self.used : self.used + total] << position)
        self.used += total
        return values

    def check_finished(self) -> None:
        if len(self.bits) - self.used >= 8 or self.bits[self.used :].any():
            raise LatentFileError("ec payload has data past its raw bits")


def _weights_model(model: EntropyModel, count: int) -> tuple:
    """The model family and probabilities of `count` predictor weights."""
    return _FAMILY, np.repeat(model.weight_probabilities[None], count, axis=0)


def encode(
    model_id: int, model: EntropyModel, q: Quantized, scales: np.ndarray, offsets: np.ndarray
) -> Compressed:
    """The params and payload of quantized symbols with their integer scales, under `model`
    (`model_id`) and per-channel scale-index offsets."""
    encoder = constriction.stream.queue.RangeEncoder()
    keys = sorted(q.coefs)
    weights = [q.coefs[k][1:] for k in keys] + ([] if q.filter is None else [q.filter.ravel()])
    weights = np.concatenate(weights) + 128
    encoder.encode(weights.astype(np.int32), *_weights_model(model, len(weights)))
    raws, counts = [], []
    for c in range(len(q.symbols)):
        centre, fraction = split_mean(q.means[c])
        coded, raw, count = to_alphabet(q.symbols[c] - centre)
        rows = model.scale_index(scales[c], int(offsets[c]))
        probabilities = model.probabilities[coding_order(rows), coding_order(fraction)]
        encoder.encode(coding_order(coded).astype(np.int32), _FAMILY, probabilities)
        raws.append(coding_order(raw))
        counts.append(coding_order(count))
    words = encoder.get_compressed().astype("<u4")
    bits = _pack_bits(np.concatenate(raws), np.concatenate(counts))
    params = b"".join([
        bytes([model_id]),
        q.steps.astype("<f2").tobytes(),
        q.shrinks.astype(np.uint8).tobytes(),
        offsets.astype(np.int8).tobytes(),
        np.array([q.coefs[k][0] for k in keys], "<i2").tobytes(),
        bytes([q.filter is not None]),
    ])  # fmt: skip
    return Compressed(params, _COUNT.pack(len(words)) + words.tobytes() + bits)


def decode(
    models: Callable[[int], EntropyModel | None],
    params: bytes,
    payload: bytes,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """The float32 latent `(C, H, W)` that `encode` coded, under the model of the id its params
    name (`models(id)`); `LatentFileError` if it does not parse."""
    if not params:
        raise LatentFileError("ec params are empty")
    model = models(params[0])
    if model is None:
        raise LatentFileError(f"ec entropy model {params[0]} is unknown to this reader")
    steps, shrinks, offsets, biases, filtered = _unpack(params[1:], shape)
    if len(payload) < _COUNT.size:
        raise LatentFileError("ec payload is shorter than its word count")
    (count,) = _COUNT.unpack_from(payload)
    end = _COUNT.size + 4 * count
    if end > len(payload):
        raise LatentFileError(f"ec payload holds fewer than its {count} words")
    decoder = constriction.stream.queue.RangeDecoder(
        np.frombuffer(payload[_COUNT.size : end], "<u4")
    )
    reader = _BitReader(payload[end:])
    counts = [feature_counts(*key)[0] for key in biases]
    channels = shape[0]
    taps = channels * (1 + 9 * channels) if filtered else 0
    try:
        weights = decoder.decode(*_weights_model(model, sum(counts) + taps)).astype(np.int64) - 128
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise LatentFileError(f"ec payload does not decode: {exc}") from exc
    weights, filter_weights = weights[: sum(counts)], weights[sum(counts) :]
    splits = np.split(weights, np.cumsum(counts)[:-1])
    coefs = {k: np.concatenate([[b], w]) for (k, b), w in zip(biases.items(), splits, strict=True)}
    probabilities = model.probabilities

    def decode_row(c: int, y: int, x: np.ndarray, mu: np.ndarray, scale: np.ndarray) -> np.ndarray:
        centre, fraction = split_mean(mu)
        rows = model.scale_index(scale, int(offsets[c]))
        try:
            coded = decoder.decode(_FAMILY, probabilities[rows, fraction]).astype(np.int64)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise LatentFileError(f"ec payload does not decode: {exc}") from exc
        base, sign, raw_bits = from_alphabet(coded)
        if raw_bits.any():
            base = base + reader.read(raw_bits)
        values = centre + sign * base
        if np.abs(values).max() > MAX_SYMBOL:
            raise LatentFileError("ec payload decodes to a symbol out of range")
        return values

    symbols, means = walk(model, coefs, shape, step_feature(steps), decode_row)
    if not decoder.maybe_exhausted():
        raise LatentFileError("ec payload has data past the coded symbols")
    reader.check_finished()
    return reconstruct(symbols, means, steps, shrinks,
                       filter_weights.reshape(channels, -1) if filtered else None)  # fmt: skip


def _unpack(
    params: bytes, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[tuple[int, int], int], bool]:
    """Steps (float64 of float16), shrinks `(C, 2)`, scale-index offsets, the mean bias of each
    predictor key, and whether a filter follows the predictors' weights."""
    channels, _, width = shape
    keys = [(c, p) for c in range(channels) for p in phases(width)]
    size = 5 * channels + 2 * len(keys) + 1
    if len(params) != size:
        raise LatentFileError(f"ec params are {len(params) + 1} bytes, expected {size + 1}")
    steps = np.frombuffer(params, "<f2", channels).astype(np.float64)
    if not (np.isfinite(steps).all() and (steps > 0).all()):
        raise LatentFileError("ec params hold a non-positive or non-finite step")
    shrinks = np.frombuffer(params, np.uint8, 2 * channels, 2 * channels).astype(np.int64)
    offsets = np.frombuffer(params, np.int8, channels, 4 * channels).astype(np.int64)
    if np.abs(offsets).max() > MAX_OFFSET:
        raise LatentFileError(f"ec scale offset out of -{MAX_OFFSET}..{MAX_OFFSET}")
    biases = np.frombuffer(params, "<i2", len(keys), 5 * channels).astype(np.int64)
    if params[-1] > 1:
        raise LatentFileError(f"ec filter flag is {params[-1]}, expected 0 or 1")
    biases = dict(zip(keys, biases.tolist(), strict=True))
    return steps, shrinks.reshape(channels, 2), offsets, biases, params[-1] == 1
