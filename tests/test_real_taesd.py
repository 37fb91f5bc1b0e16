"""Acceptance on real data: TAESD weights and a Kodak photo from ../shared."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from codec import Codec, CodecSettings, LatentFile, load_codec
from codec.images import image_to_tensor, open_image
from codec.measures import bits_per_pixel, psnr
from codec.methods import ec
from codec.transform import latent_of
from tests.shared import kodak_path, taesd_path

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def codec() -> Codec:
    """The real TAESD coding the encoder's own latents (no correction: these tests measure the
    quantizers)."""
    weights = str(taesd_path())
    settings = CodecSettings(encoder=weights, decoder=weights, device="cpu", correction="off")
    return load_codec(settings)


@pytest.fixture(scope="module")
def kodim23() -> Image.Image:
    return open_image(kodak_path("kodim23.png"))


def test_default_quality_is_small_and_close_to_the_float_round_trip(codec, kodim23):
    latent = latent_of(codec, kodim23)
    float_trip = codec.decode_latents(torch.from_numpy(latent)[None])[0]
    float_psnr = psnr(kodim23, Image.fromarray(
        float_trip.mul(255).round().byte().permute(1, 2, 0).numpy()
    ))  # fmt: skip
    data = codec.compress(kodim23, latent=latent, effort=0).data
    header = LatentFile.from_bytes(data)
    assert header.bits_per_pixel <= 0.15
    decoded = codec.decompress(data)
    assert decoded.size == (768, 512)
    assert psnr(kodim23, decoded) >= float_psnr - 1.0


def test_palette_baseline_is_about_five_kilobytes_per_512_square(codec, kodim23):
    latent = latent_of(codec, kodim23)
    data = codec.compress(kodim23, latent=latent, method="palette", effort=0).data
    per_512_square = len(data) * (512 * 512) / (768 * 512)
    assert 3000 < per_512_square < 6500
    assert psnr(kodim23, codec.decompress(data)) > 22


def test_tiled_decode_matches_whole_decode(codec, kodim23):
    latent = torch.from_numpy(latent_of(codec, kodim23))[None]
    whole = codec.decode_latents(latent)
    tiled_codec = load_codec(CodecSettings(tile=256), encoder=codec.encoder, decoder=codec.decoder)
    tiled = tiled_codec.decode_latents(latent)
    mse = torch.mean((whole - tiled) ** 2).item()
    assert 10 * np.log10(1 / mse) > 40


def test_cli_round_trip_of_kodim23(tmp_path):
    weights = str(taesd_path())
    env = {"LATENT_GALLERY_ENCODER": weights, "LATENT_GALLERY_DECODER": weights, "PATH": ""}
    sdz, png = tmp_path / "k.sdz", tmp_path / "k.png"
    cli = [sys.executable, "-m", "codec.cli"]
    for args in (
        ["encode", str(kodak_path("kodim23.png")), "-o", str(sdz)],
        ["decode", str(sdz), "-o", str(png)],
    ):
        done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert bits_per_pixel(sdz.stat().st_size, 768, 512) <= 0.15
    assert Image.open(png).size == (768, 512)
    assert image_to_tensor(Image.open(png)).shape == (1, 3, 512, 768)


def test_low_rate_filter_is_chosen_and_raises_decoded_psnr(codec, kodim23):
    """At a low quality the ec file carries the loop filter, and it helps in pixels too."""
    quantized = ec.quantize(ec.shipped_model(), latent_of(codec, kodim23), 45)
    assert quantized.filter is not None
    decoded = [
        codec.decode_latents(torch.from_numpy(q.dequantize())[None])[0]
        for q in (quantized, dataclasses.replace(quantized, filter=None))
    ]
    target = image_to_tensor(kodim23)[0]
    filtered, unfiltered = ((d - target).square().mean().item() for d in decoded)
    assert 10 * np.log10(unfiltered / filtered) > 0.5
