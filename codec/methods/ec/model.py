"""The learned integer entropy model: per (channel, phase) an integer network, and frequency tables.

Each symbol has an integer mean `mu` (units of `2**-MEAN_BITS` symbols) from the file's own
linear predictor (`ec1`'s, fitted per image: inter-channel correlations differ from image to
image) and an integer *scale index* from a learned one-hidden-layer ReLU network over the
neighbours' absolute residuals and magnitudes, `|mu|` and the channel's step, read through a
threshold table. The symbol is coded as its offset from `mu` rounded, under one of the shipped
16-bit frequency tables, chosen by the scale index (plus the file's per-channel offset) and the
fraction of `mu`; the predictor's weights are coded under a shipped table too. Everything here
is integer arithmetic (int64 products and sums, arithmetic shifts, clips, table lookups), so
every machine computes the same tables for the same file. The weights file is bound to the
latent space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import torch

from ...learned_weights import WEIGHTS, LearnedWeights

MEAN_BITS = 6
"""Means and residuals are integers in units of `2**-MEAN_BITS` symbols."""
NET_SHIFT = 8
"""Network weights are in units of `2**-NET_SHIFT`; each layer's sum is shifted right by it."""
HIDDEN = 16
"""Hidden units of each scale network."""
SCALES = 64
"""Scale indices (rows of the frequency tables)."""
FRACTIONS = 4
"""Bins of the fraction of `mu` (columns of the frequency tables)."""
RADIUS = 16
"""Offsets from the rounded mean in `-RADIUS..RADIUS` are symbols of their own."""
ESCAPES = 16
"""Larger offsets are coded as an escape bucket `k` (with the sign) and `k` raw bits."""
ALPHABET = 2 * RADIUS + 1 + 2 * ESCAPES
TABLE_BITS = 16
"""Every frequency table sums to `2**TABLE_BITS`, every entry at least 1."""
MAX_SYMBOL = 32767
_MAX_MEAN = MAX_SYMBOL << MEAN_BITS
_MAX_INPUT = 1 << 24


def spatial_count(phase: int) -> int:
    """Spatial neighbours of a phase: above, above-left, above-right (odd: left, right too)."""
    return 5 if phase else 3


def input_count(channel: int, phase: int) -> int:
    """Number of scale-network inputs of a channel and phase."""
    return 2 * spatial_count(phase) + channel + 2


def step_feature(step: np.ndarray) -> np.ndarray:
    """An integer of each float16 step, about `64 * log2(step)`: its bits less those of 1.0,
    shifted right by 4 (exact: the exponent and mantissa bits read as one integer)."""
    bits = np.asarray(step, np.float16).view(np.uint16).astype(np.int64)
    return (bits - 15360) >> 4


@dataclass(frozen=True)
class Predictor:
    """The integer scale network of one channel and phase."""

    w1: np.ndarray
    """`(HIDDEN, inputs)` first-layer weights, units `2**-NET_SHIFT`."""
    b1: np.ndarray
    """`(HIDDEN,)` first-layer biases, units `2**-(MEAN_BITS + NET_SHIFT)`."""
    w2: np.ndarray
    """`(HIDDEN,)` output weights, units `2**-NET_SHIFT`."""
    b2: int
    """Output bias, units `2**-(MEAN_BITS + NET_SHIFT)`."""

    def scales(self, inputs: np.ndarray) -> np.ndarray:
        """Integer scales (`2**-MEAN_BITS` units, at least 1) of network inputs `(F, ...)`."""
        x = np.clip(inputs, -_MAX_INPUT, _MAX_INPUT)
        bias = self.b1.reshape(-1, *[1] * (x.ndim - 1))
        hidden = np.maximum(np.tensordot(self.w1, x, axes=1) + bias, 0)
        out = np.tensordot(self.w2, hidden >> NET_SHIFT, axes=1) + self.b2
        return np.maximum(out >> NET_SHIFT, 1)


@dataclass(frozen=True)
class EntropyModel:
    """The scale networks keyed `(channel, phase)`, the scale thresholds, the frequency tables
    of symbols and of the per-image predictor weights."""

    predictors: dict[tuple[int, int], Predictor]
    thresholds: np.ndarray
    """`(SCALES - 1,)` increasing integer scales: the index of a scale is how many it reaches."""
    frequencies: np.ndarray
    """`(SCALES, FRACTIONS, ALPHABET)` int64 tables, each summing to `2**TABLE_BITS`."""
    weight_frequencies: np.ndarray
    """`(256,)` int64 table of predictor weights `-128..127`, summing to `2**TABLE_BITS`."""

    def scale_index(self, scales: np.ndarray, offset: int) -> np.ndarray:
        """Table rows of integer scales, moved by a file's per-channel offset."""
        index = np.searchsorted(self.thresholds, scales, side="right") + offset
        return np.clip(index, 0, SCALES - 1)

    @cached_property
    def probabilities(self) -> np.ndarray:
        """The tables as float64 probabilities (exact: dyadic)."""
        return self.frequencies / float(1 << TABLE_BITS)

    @cached_property
    def weight_probabilities(self) -> np.ndarray:
        """The weight table as float64 probabilities (exact: dyadic)."""
        return self.weight_frequencies / float(1 << TABLE_BITS)

    @cached_property
    def code_lengths(self) -> np.ndarray:
        """Bits of each table entry, escapes' raw bits included (encoder only)."""
        bits = TABLE_BITS - np.log2(self.frequencies)
        bits[..., 2 * RADIUS + 1 :] += np.repeat(np.arange(ESCAPES), 2)
        return bits


def clip_means(means: np.ndarray) -> np.ndarray:
    """Means clipped to the symbol range (so that every offset fits the alphabet)."""
    return np.clip(means, -_MAX_MEAN, _MAX_MEAN)


def split_mean(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each integer mean's nearest symbol and the bin of its fraction (`0..FRACTIONS-1`)."""
    half = 1 << (MEAN_BITS - 1)
    centre = (means + half) >> MEAN_BITS
    fraction = (means - (centre << MEAN_BITS) + half) * FRACTIONS >> MEAN_BITS
    return centre, fraction


def to_alphabet(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coded symbols of offsets from the rounded mean, and each escape's raw bits and their
    count (0 where none): `|d| > RADIUS` is bucket `k` of `|d| - RADIUS` (Elias-gamma style)."""
    magnitude = np.abs(offsets)
    excess = np.maximum(magnitude - RADIUS, 1)
    bucket = np.frexp(excess.astype(np.float64))[1] - 1
    escaped = magnitude > RADIUS
    symbols = np.where(escaped, 2 * RADIUS + 1 + 2 * bucket + (offsets < 0), offsets + RADIUS)
    raw = np.where(escaped, excess - (1 << bucket), 0)
    return symbols, raw, np.where(escaped, bucket, 0)


def from_alphabet(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `to_alphabet` before the raw bits: `(base offset, sign, raw bit count)`;
    the offset is `sign * (base + raw)`."""
    escaped = symbols > 2 * RADIUS
    bucket = np.where(escaped, (symbols - 2 * RADIUS - 1) >> 1, 0)
    sign = np.where(escaped & ((symbols - 2 * RADIUS - 1) & 1 == 1), -1, 1)
    base = np.where(escaped, RADIUS + (1 << bucket), symbols - RADIUS)
    return base, sign, bucket


def _build(state: dict[str, torch.Tensor], meta: dict[str, str]) -> EntropyModel:
    """The model a weights file holds (`ValueError` on wrong shapes or values)."""
    channels = int(meta["channels"])

    def ints(name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = state[name].double().numpy()
        if value.shape != shape or not np.array_equal(value, np.round(value)):
            raise ValueError(f"{name}: expected integers of shape {shape}, got {value.shape}")
        return value.astype(np.int64)

    predictors = {}
    for c in range(channels):
        for p in (0, 1):
            n_in = input_count(c, p)
            predictors[(c, p)] = Predictor(
                ints(f"w1.{c}.{p}", (HIDDEN, n_in)),
                ints(f"b1.{c}.{p}", (HIDDEN,)),
                ints(f"w2.{c}.{p}", (HIDDEN,)),
                int(ints(f"b2.{c}.{p}", (1,))[0]),
            )
    for key, pred in predictors.items():
        hidden = (np.abs(pred.w1).sum(1) * _MAX_INPUT + np.abs(pred.b1)) >> NET_SHIFT
        if hidden.max() >= 1 << 40 or np.abs(pred.w2) @ hidden + abs(pred.b2) >= 1 << 62:
            raise ValueError(f"scale network {key} could overflow int64")
    thresholds = ints("thresholds", (SCALES - 1,))
    frequencies = ints("frequencies", (SCALES, FRACTIONS, ALPHABET))
    weights = ints("weight_frequencies", (256,))
    for table in (frequencies, weights):
        if (table < 1).any() or (table.sum(-1) != 1 << TABLE_BITS).any():
            raise ValueError("frequency tables must be positive and sum to 2**16")
    if (np.diff(thresholds) <= 0).any():
        raise ValueError("scale thresholds must increase")
    return EntropyModel(predictors, thresholds, frequencies, weights)


ENTROPY_MODELS = LearnedWeights(
    format="latent-gallery-entropy-model-1",
    name="entropy model",
    command="python -m codec.training.entropy_model",
    setting=None,
    folder=WEIGHTS / "entropy",
    binding=("space", "channels"),
    build=_build,
)
MODEL_ID = 1
"""The model new files are coded with; each shipped model keeps its id forever, since the
files coded with it need exactly it to decode."""


def model_path(model_id: int) -> Path:
    """The shipped file of a model id."""
    return ENTROPY_MODELS.folder / f"sd1-{model_id}.safetensors"


def model_tensors(model: EntropyModel) -> dict[str, torch.Tensor]:
    """The tensors of a weights file of `model` (integers, exact in float32)."""
    tensors = {"thresholds": model.thresholds, "frequencies": model.frequencies,
               "weight_frequencies": model.weight_frequencies}  # fmt: skip
    for (c, p), pred in model.predictors.items():
        tensors |= {f"w1.{c}.{p}": pred.w1, f"b1.{c}.{p}": pred.b1, f"w2.{c}.{p}": pred.w2,
                    f"b2.{c}.{p}": np.array([pred.b2])}  # fmt: skip
    for name, value in tensors.items():
        if np.abs(value).max() >= 1 << 24:
            raise ValueError(f"{name} does not fit float32 exactly")
    return {
        name: torch.from_numpy(np.asarray(value, np.float64)) for name, value in tensors.items()
    }


@cache
def shipped_model(model_id: int = MODEL_ID) -> EntropyModel | None:
    """The shipped model of an id (learned on `sd1` latents, used for every file that names
    it), or None if there is no such model."""
    path = model_path(model_id)
    return ENTROPY_MODELS.read(path)[0] if path.exists() else None
