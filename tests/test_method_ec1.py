"""The `ec1` method (id 3, version 1's `ec`): exact symbol round trips, rate control, robustness."""

from __future__ import annotations

import dataclasses
import itertools

import constriction
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.errors import LatentFileError
from codec.methods import ec1
from codec.methods.base import Compressed
from codec.methods.ec1.bitstream import WEIGHT_MODEL, side_weights

METHOD = ec1.EntropyCodedMethod()


def smooth_latent(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A latent-like field: smooth correlated channels, std about 0.7, range about +-3."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((4, height + 4, width + 4))
    kernel = np.ones(5) / 5
    for axis in (1, 2):
        noise = np.apply_along_axis(np.convolve, axis, noise, kernel, mode="valid")
    mixed = np.einsum("ij,jhw->ihw", np.eye(4) + 0.5, noise)
    mixed += 0.2 * rng.standard_normal(mixed.shape)
    return (mixed / mixed.std() * 0.7).astype(np.float32)


LATENT = smooth_latent(24, 32)
COMPRESSED = METHOD.compress(LATENT, METHOD.default_quality)


def coded_size(compressed: Compressed) -> int:
    return len(compressed.params) + len(compressed.payload)


@pytest.mark.parametrize("quality", [1, 30, METHOD.default_quality, 100])
@pytest.mark.parametrize("shape", [(4, 24, 32), (4, 1, 1), (4, 1, 200), (4, 200, 1), (4, 3, 5)])
def test_decoder_reproduces_the_quantizer(shape: tuple[int, int, int], quality: int) -> None:
    latent = smooth_latent(shape[1], shape[2], seed=quality)[:, : shape[1], : shape[2]]
    compressed = METHOD.compress(latent, quality)
    decoded = METHOD.decompress(compressed.params, compressed.payload, shape)
    intended = ec1.quantize(latent, quality)
    assert decoded.dtype == np.float32 and decoded.shape == shape
    np.testing.assert_array_equal(decoded, intended.dequantize())
    step = intended.steps[:, None, None]
    assert np.all(np.abs(decoded - latent) <= 2 * step)


def test_error_shrinks_with_quality_and_near_lossless_at_100() -> None:
    errors = []
    for quality in (1, 25, 50, 75, 100):
        c = METHOD.compress(LATENT, quality)
        decoded = METHOD.decompress(c.params, c.payload, LATENT.shape)
        errors.append(float(np.abs(decoded - LATENT).max()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.02


def test_size_grows_with_quality() -> None:
    sizes = [coded_size(METHOD.compress(LATENT, q)) for q in range(1, 101, 3)]
    assert all(a <= b for a, b in itertools.pairwise(sizes))
    assert sizes[-1] > 4 * sizes[0]


def test_quality_to_step_is_smooth_and_decreasing() -> None:
    steps = np.array([ec1.quality_to_step(q) for q in range(1, 101)])
    assert np.all(np.diff(steps) < 0)
    assert np.all(steps[:-1] / steps[1:] < 1.2)
    with pytest.raises(ValueError):
        ec1.quality_to_step(0)


def test_context_model_beats_a_memoryless_code() -> None:
    """The coded symbols take less than their empirical entropy taken independently."""
    q = ec1.quantize(LATENT, METHOD.default_quality)
    _, counts = np.unique(q.symbols, return_counts=True)
    p = counts / counts.sum()
    memoryless_bytes = -(counts * np.log2(p)).sum() / 8
    weights = constriction.stream.queue.RangeEncoder()
    for w in side_weights(q):
        weights.encode(w.astype(np.int32), WEIGHT_MODEL)
    symbol_bytes = len(COMPRESSED.payload) - 4 * weights.num_words()
    assert symbol_bytes < 0.9 * memoryless_bytes


def test_rejects_non_finite_and_wrongly_shaped_latents() -> None:
    bad = LATENT.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        METHOD.compress(bad, 50)
    with pytest.raises(ValueError):
        METHOD.compress(LATENT[:3], 50)


def decode_or_file_error(params: bytes, payload: bytes) -> None:
    """Decoding corrupt input either fails with `LatentFileError` or yields a sane latent."""
    try:
        out = METHOD.decompress(params, payload, LATENT.shape)
    except LatentFileError:
        return
    assert out.shape == LATENT.shape and out.dtype == np.float32
    assert np.isfinite(out).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(COMPRESSED.payload) - 1))
def test_truncated_payload(cut: int) -> None:
    decode_or_file_error(COMPRESSED.params, COMPRESSED.payload[:cut])


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(COMPRESSED.params) - 2))
def test_truncated_params(cut: int) -> None:
    with pytest.raises(LatentFileError):
        METHOD.decompress(COMPRESSED.params[:cut], COMPRESSED.payload, LATENT.shape)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_bit_flips(data: st.DataObject) -> None:
    in_params = data.draw(st.booleans())
    blob = bytearray(COMPRESSED.params if in_params else COMPRESSED.payload)
    bit = data.draw(st.integers(min_value=0, max_value=8 * len(blob) - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    if in_params:
        decode_or_file_error(bytes(blob), COMPRESSED.payload)
    else:
        decode_or_file_error(COMPRESSED.params, bytes(blob))


@settings(max_examples=60, deadline=None)
@given(params=st.binary(max_size=400), payload=st.binary(max_size=4000))
def test_random_bytes(params: bytes, payload: bytes) -> None:
    decode_or_file_error(params, payload)


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=4, max_size=4000).filter(lambda b: len(b) % 4 == 0))
def test_random_payload_with_valid_params(payload: bytes) -> None:
    decode_or_file_error(COMPRESSED.params, payload)


@settings(max_examples=60, deadline=None)
@given(params=st.binary(min_size=len(COMPRESSED.params), max_size=len(COMPRESSED.params)))
def test_random_params_of_the_right_size(params: bytes) -> None:
    decode_or_file_error(params, COMPRESSED.payload)


def test_extra_payload_words_are_rejected() -> None:
    with pytest.raises(LatentFileError):
        METHOD.decompress(COMPRESSED.params, COMPRESSED.payload + b"\xff" * 64, LATENT.shape)


def test_filter_pays_at_low_rates_and_is_left_out_at_high_rates() -> None:
    latent = smooth_latent(64, 96)
    low = ec1.quantize(latent, 45)
    assert low.filter is not None
    unfiltered = dataclasses.replace(low, filter=None)
    assert np.mean((low.dequantize() - latent) ** 2) < 0.95 * np.mean(
        (unfiltered.dequantize() - latent) ** 2
    )
    compressed = METHOD.compress(latent, 45)
    np.testing.assert_array_equal(
        METHOD.decompress(compressed.params, compressed.payload, latent.shape), low.dequantize()
    )
    assert ec1.quantize(latent, 100).filter is None


def test_params_without_the_filter_flag_read_as_unfiltered() -> None:
    """Files written before the filter existed have params one byte shorter."""
    assert COMPRESSED.params[-1] == 0
    np.testing.assert_array_equal(
        METHOD.decompress(COMPRESSED.params[:-1], COMPRESSED.payload, LATENT.shape),
        METHOD.decompress(COMPRESSED.params, COMPRESSED.payload, LATENT.shape),
    )


def test_filter_flag_other_than_zero_or_one_is_refused() -> None:
    with pytest.raises(LatentFileError, match="filter flag"):
        METHOD.decompress(COMPRESSED.params[:-1] + b"\x02", COMPRESSED.payload, LATENT.shape)
