"""Codec end to end on tiny random models: sizes, rate control, spaces, settings, version."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image

from codec import (
    Codec,
    CodecError,
    CodecSettings,
    LatentFile,
    LatentSpaceMismatchError,
    SettingsError,
    load_codec,
    pipeline,
    unpack,
)
from codec.container import FAMILIES
from codec.methods import get_method, method_names
from codec.settings import check_settings
from codec.spaces import SD1, SDXL
from tests.tiny_models import tiny_taesd, tiny_taesd_module


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def codec() -> Codec:
    model = tiny_taesd()
    return load_codec(CodecSettings(), encoder=model, decoder=model)


@pytest.mark.parametrize("size", [(1, 1), (13, 7), (1, 80), (70, 3), (64, 48)])
def test_any_size_round_trips_to_the_same_size(codec, size):
    data = codec.compress(noise_image(*size)).data
    header = LatentFile.from_bytes(data)
    assert (header.width, header.height) == size
    assert header.latent_shape == (4, -(-size[1] // 8), -(-size[0] // 8))
    assert header.encoder_family == "taesd"
    assert header.encoder_fingerprint == codec.encoder.encoder_fingerprint
    assert codec.decompress(data).size == size


@pytest.mark.parametrize("method", method_names())
def test_every_method_round_trips_a_latent(codec, method):
    rng = np.random.default_rng(1)
    latent = rng.normal(0, 1, (4, 9, 11)).astype(np.float32)
    data = codec.compress(noise_image(88, 72), latent=latent, method=method, effort=0).data
    header, restored = unpack(data, SD1)
    assert header.method_id == get_method(method).id
    assert restored.shape == latent.shape and restored.dtype == np.float32
    assert np.corrcoef(restored.ravel(), latent.ravel())[0, 1] > 0.9


def test_target_bytes_gives_the_largest_file_that_fits(codec):
    image = noise_image(192, 128)
    latent = np.random.default_rng(2).normal(0, 1, (4, 16, 24)).astype(np.float32)

    def compress(**rate) -> bytes:
        return codec.compress(image, latent=latent, effort=0, **rate).data

    sizes = {q: len(compress(quality=q)) for q in range(1, 101)}
    target = (sizes[10] + sizes[90]) // 2
    fitted = compress(target_bytes=target)
    assert len(fitted) <= target
    assert len(fitted) == max(size for size in sizes.values() if size <= target)
    with pytest.raises(CodecError, match="cannot fit"):
        compress(target_bytes=50)


def test_quality_out_of_range_is_refused(codec):
    with pytest.raises(ValueError, match=r"1\.\.100"):
        codec.compress(noise_image(8, 8), quality=0)


def test_decoder_of_another_latent_space_is_a_clear_error(codec):
    data = codec.compress(noise_image(16, 16)).data
    sdxl = load_codec(CodecSettings(), encoder=codec.encoder, decoder=tiny_taesd(space=SDXL))
    with pytest.raises(LatentSpaceMismatchError, match=r"sd1 latent space.*LATENT_GALLERY_DECODER"):
        sdxl.decompress(data)
    with pytest.raises(LatentSpaceMismatchError, match="decoder speaks sdxl"):
        unpack(data, SDXL)


def test_large_images_go_through_tiles(codec):
    tiled = load_codec(CodecSettings(tile=64), encoder=codec.encoder, decoder=codec.decoder)
    image = noise_image(150, 90)
    data = tiled.compress(image).data
    assert LatentFile.from_bytes(data).latent_shape == (4, 12, 19)
    decoded = tiled.decompress(data)
    assert decoded.size == (150, 90)


def test_families_are_stable_file_ids():
    assert FAMILIES == {"taesd": 1, "kl": 2}


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("encoder", "/no/such/folder", "LATENT_GALLERY_ENCODER"),
        ("decoder", "not a hub id", "LATENT_GALLERY_DECODER"),
        ("device", "tpu", "LATENT_GALLERY_DEVICE"),
        ("max_pixels", 0, "LATENT_GALLERY_MAX_PIXELS"),
        ("tile", 100, "LATENT_GALLERY_TILE"),
        ("method", "bogus", "LATENT_GALLERY_METHOD"),
        ("correction", "sometimes", "LATENT_GALLERY_CORRECTION"),
        ("thumbnail_decoder", "/no/such.safetensors", "LATENT_GALLERY_THUMBNAIL_DECODER"),
        ("effort", "high", "LATENT_GALLERY_EFFORT"),
        ("effort", "10", "LATENT_GALLERY_EFFORT"),
        ("render_precision", "fp8", "LATENT_GALLERY_RENDER_PRECISION"),
    ],
)
def test_load_codec_refuses_a_bad_setting_naming_its_variable(field, value, variable):
    settings = CodecSettings(**{field: value})
    with pytest.raises(SettingsError, match=f"^{re.escape(f'{variable}={value!r}: ')}") as refused:
        load_codec(settings)
    assert isinstance(refused.value, ValueError)


def test_a_bad_method_lists_the_methods():
    with pytest.raises(SettingsError) as refused:
        load_codec(CodecSettings(method="bogus"))
    expected = f"LATENT_GALLERY_METHOD='bogus': expected one of {', '.join(method_names())}"
    assert str(refused.value) == expected


def test_settings_that_load_codec_accepts(tiny_folder, tmp_path):
    weights = tmp_path / "tuned.safetensors"
    weights.write_bytes(b"checked when it loads")
    for settings in (
        CodecSettings(),
        CodecSettings(encoder="sd-vae", decoder="madebyollin/taesdxl", device="cuda:1"),
        CodecSettings(encoder=str(tiny_folder), decoder=str(tiny_folder), device="cpu"),
        CodecSettings(method="palette", effort="0", tile=512, correction="off"),
        CodecSettings(thumbnail_decoder=str(weights), render_precision="model", device="mps"),
    ):
        check_settings(settings)


def test_from_env_names_the_variable_that_does_not_parse():
    expected = ": expected a positive integer"
    with pytest.raises(SettingsError, match=rf"^LATENT_GALLERY_TILE='big'{expected}"):
        CodecSettings.from_env({"LATENT_GALLERY_TILE": "big"})
    with pytest.raises(SettingsError, match=rf"^LATENT_GALLERY_MAX_PIXELS='-5'{expected}"):
        CodecSettings.from_env({"LATENT_GALLERY_MAX_PIXELS": "-5"})


def test_version_names_the_decoder_weights_without_loading_a_model(
    tiny_folder, tmp_path, monkeypatch
):
    folder = tmp_path / "decoder"
    shutil.copytree(tiny_folder, folder)
    settings = CodecSettings(encoder=str(folder), decoder=str(folder), device="cpu")
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "load_autoencoder", pytest.fail)  # no model may load
        codec = load_codec(settings)
        version = codec.version
        assert len(version) == 20 and int(version, 16) >= 0
        assert codec.measured_plan is None
        assert load_codec(settings).version == version  # the same weights, the same version
    codec.load()
    assert codec.version == version and load_codec(settings).version == version
    tiny_taesd_module(seed=1).save_pretrained(folder)  # new weights in the same files
    assert load_codec(settings).version != version
    off = load_codec(CodecSettings(decoder=str(folder), thumbnail_decoder="off"))
    assert off.version != load_codec(CodecSettings(decoder=str(folder))).version


def test_version_of_given_models_is_their_decoder_fingerprint():
    model, other = tiny_taesd(0), tiny_taesd(1)
    settings = CodecSettings(thumbnail_decoder="off")
    version = load_codec(settings, encoder=model, decoder=model).version
    assert version == load_codec(settings, encoder=other, decoder=model).version
    assert version == load_codec(settings, encoder=model).version  # one model serves both
    assert version != load_codec(settings, encoder=model, decoder=other).version


def test_version_of_a_hub_id_is_that_of_its_files_in_the_local_cache(
    tiny_folder, tmp_path, monkeypatch
):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--tiny-taesd"
    shutil.copytree(tiny_folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    downloaded = load_codec(CodecSettings(decoder="someone/tiny-taesd")).version
    assert downloaded == load_codec(CodecSettings(decoder=str(tiny_folder))).version
    assert load_codec(CodecSettings(decoder="someone/other")).version != downloaded
