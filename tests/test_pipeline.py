"""Codec end to end on tiny random models: sizes, batching, rate control, spaces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from codec import Codec, CodecError, CodecSettings, LatentFile, LatentSpaceMismatchError
from codec.container import FAMILIES
from codec.methods import get_method, method_names
from codec.spaces import SDXL
from tests.tiny_models import tiny_taesd


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def codec() -> Codec:
    model = tiny_taesd()
    return Codec(CodecSettings(), encoder=model, decoder=model)


@pytest.mark.parametrize("size", [(1, 1), (13, 7), (1, 80), (70, 3), (64, 48)])
def test_any_size_round_trips_to_the_same_size(codec, size):
    data = codec.encode(noise_image(*size))
    header = LatentFile.from_bytes(data)
    assert (header.width, header.height) == size
    assert header.latent_shape == (4, -(-size[1] // 8), -(-size[0] // 8))
    assert header.encoder_family == "taesd"
    assert header.encoder_fingerprint == codec.encoder.encoder_fingerprint
    assert codec.decode(data).size == size


@pytest.mark.parametrize("method", method_names())
def test_every_method_round_trips_a_latent(codec, method):
    rng = np.random.default_rng(1)
    latent = rng.normal(0, 1, (4, 9, 11)).astype(np.float32)
    data = codec.pack(latent, 88, 72, method=method)
    header, restored = codec.unpack(data)
    assert header.method_id == get_method(method).id
    assert restored.shape == latent.shape and restored.dtype == np.float32
    assert np.corrcoef(restored.ravel(), latent.ravel())[0, 1] > 0.9


def test_batch_decode_matches_single_decodes(codec):
    files = [
        codec.encode(noise_image(32, 24, seed=1)),
        codec.encode(noise_image(40, 16, seed=2)),
        codec.encode(noise_image(32, 24, seed=3)),
    ]
    batch = codec.decode_batch(files)
    for data, image in zip(files, batch, strict=True):
        single = codec.decode(data)
        assert image.size == single.size
        difference = np.abs(np.asarray(image, np.int16) - np.asarray(single, np.int16))
        assert difference.max() <= 1


def test_target_bytes_gives_the_largest_file_that_fits(codec):
    latent = np.random.default_rng(2).normal(0, 1, (4, 16, 24)).astype(np.float32)
    sizes = {q: len(codec.pack(latent, 192, 128, quality=q)) for q in range(1, 101)}
    target = (sizes[10] + sizes[90]) // 2
    fitted = codec.pack(latent, 192, 128, target_bytes=target)
    assert len(fitted) <= target
    assert len(fitted) == max(size for size in sizes.values() if size <= target)
    with pytest.raises(CodecError, match="cannot fit"):
        codec.pack(latent, 192, 128, target_bytes=50)


def test_quality_out_of_range_is_refused(codec):
    with pytest.raises(ValueError, match=r"1\.\.100"):
        codec.encode(noise_image(8, 8), quality=0)


def test_decoder_of_another_latent_space_is_a_clear_error(codec):
    data = codec.encode(noise_image(16, 16))
    sdxl = Codec(CodecSettings(), encoder=codec.encoder, decoder=tiny_taesd(space=SDXL))
    with pytest.raises(LatentSpaceMismatchError, match="sd1 latent space"):
        sdxl.decode(data)


def test_large_images_go_through_tiles(codec):
    tiled = Codec(CodecSettings(tile=64), encoder=codec.encoder, decoder=codec.decoder)
    image = noise_image(150, 90)
    data = tiled.encode(image)
    assert LatentFile.from_bytes(data).latent_shape == (4, 12, 19)
    decoded = tiled.decode(data)
    assert decoded.size == (150, 90)


def test_tile_must_be_a_multiple_of_64():
    with pytest.raises(ValueError, match="multiple of 64"):
        Codec(CodecSettings(tile=100))


def test_families_are_stable_file_ids():
    assert FAMILIES == {"taesd": 1, "kl": 2}
