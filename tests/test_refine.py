"""Encoder-side refinement, effort resolution and rate control (`--target-psnr`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codec import Codec, CodecError, CodecSettings, LatentFile
from codec.cli import main
from codec.images import image_to_tensor, tensor_to_image
from codec.methods import get_method
from codec.rate_control import psnr, smallest_reaching
from codec.refine import (
    CPU_DEFAULT_EFFORT,
    CUDA_DEFAULT_EFFORT,
    EFFORT_STEPS,
    MAX_EFFORT,
    dequantizer,
    refine,
    resolve_effort,
    steps_for,
)
from tests.shared import kodak_path, taesd_path
from tests.tiny_models import tiny_taesd

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def codec() -> Codec:
    model = tiny_taesd()
    return Codec(CodecSettings(tile=128), encoder=model, decoder=model)


def _reachable(codec: Codec, count: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    """Images `(count, 3, 48, 64)` the tiny decoder can draw exactly, and latents near theirs
    (a random decoder cannot draw a real photo, so refinement could not show a gain on one)."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(count, 4, 6, 8, generator=generator) * 2
    start = truth + torch.randn(truth.shape, generator=generator)
    return codec.decode_latents(truth), start.numpy()


def _float_mse(codec: Codec, data: bytes, image: torch.Tensor) -> float:
    """Pixel MSE of a file's decoded float image (before 8-bit rounding)."""
    _, latent = codec.unpack(data)
    return (codec.decode_latents(torch.from_numpy(latent)[None])[0] - image).square().mean().item()


def test_effort_maps_to_increasing_steps_from_the_plain_encoder():
    assert steps_for(0) == 0
    assert list(EFFORT_STEPS) == sorted(set(EFFORT_STEPS))
    assert len(EFFORT_STEPS) == MAX_EFFORT + 1
    with pytest.raises(ValueError, match=r"0\.\.9"):
        steps_for(10)


def test_auto_effort_is_one_step_on_cpu_more_on_cuda_for_images_that_fit():
    assert steps_for(CPU_DEFAULT_EFFORT) == 1
    assert steps_for(CUDA_DEFAULT_EFFORT) > 1
    assert resolve_effort(None, CPU, (64, 64), 1024, environ={}) == CPU_DEFAULT_EFFORT
    assert resolve_effort("auto", CUDA, (64, 64), 1024, environ={}) == CUDA_DEFAULT_EFFORT
    assert resolve_effort("auto", torch.device("mps"), (64, 64), 1024, environ={}) == 0
    assert resolve_effort(None, CUDA, (2048, 64), 1024, environ={}) == 0
    assert resolve_effort(None, CPU, (2048, 64), 1024, environ={}) == 0
    assert resolve_effort(None, CPU, (64, 64), 1024, environ={"LATENT_GALLERY_EFFORT": "3"}) == 3
    assert resolve_effort(7, CPU, (64, 64), 1024, environ={"LATENT_GALLERY_EFFORT": "3"}) == 7
    with pytest.raises(ValueError, match="neither auto nor an integer"):
        resolve_effort(None, CPU, (64, 64), 1024, environ={"LATENT_GALLERY_EFFORT": "high"})


def test_explicit_effort_on_an_image_larger_than_a_tile_is_refused():
    with pytest.raises(CodecError, match=r"at most 1024x1024.*2048x64.*effort 0"):
        resolve_effort(2, CPU, (2048, 64), 1024, environ={})
    assert resolve_effort(0, CPU, (2048, 64), 1024, environ={}) == 0


@pytest.mark.parametrize("method", ["ec", "q8", "palette"])
def test_dequantizer_is_exactly_what_the_file_holds(method):
    rng = np.random.default_rng(1)
    latent = rng.normal(0, 1.5, (4, 6, 10)).astype(np.float32)
    coder = get_method(method)
    compressed = coder.compress(latent, 60)
    stored = coder.decompress(compressed.params, compressed.payload, latent.shape)
    np.testing.assert_array_equal(dequantizer(coder, 60)(latent), stored)


@pytest.mark.parametrize(("steps", "gain"), [(1, 0.0), (2, 0.0), (8, 0.02)])
def test_refine_never_scores_below_the_plain_latent_and_reports_its_psnr(codec, steps, gain):
    """(On this toy one step moves too little to change a symbol; kodim23 below shows its gain.)"""
    images, latents = _reachable(codec)
    method = get_method("ec")
    quantize = dequantizer(method, 50)
    _, plain = refine(images, latents, codec.decoder, method, 50, 0)
    refined, scores = refine(images, latents, codec.decoder, method, 50, steps)
    assert refined.shape == latents.shape and refined.dtype == np.float32
    assert (scores >= plain).all()
    assert scores.mean() >= plain.mean() + gain
    search = codec.decoder.for_search()
    for image, latent, score in zip(images, refined, scores, strict=True):
        quantized = torch.from_numpy(quantize(latent))[None]
        for model, tolerance in ((search, 1e-3), (codec.decoder, 0.1)):
            decoded = model.decode(quantized)[0]
            mse = (decoded - image).square().mean().item()
            assert score == pytest.approx(-10 * np.log10(mse), abs=tolerance)


def test_searches_run_on_a_bfloat16_twin_on_the_cpu_only(codec):
    search = codec.decoder.for_search()
    assert search.dtype == torch.bfloat16 and codec.decoder.dtype == torch.float32
    assert search is codec.decoder.for_search() and search.for_search() is search
    assert next(search.module.parameters()).dtype == torch.bfloat16
    assert next(codec.decoder.module.parameters()).dtype == torch.float32
    latents = torch.from_numpy(_reachable(codec, 1)[1])
    assert torch.allclose(search.decode(latents), codec.decoder.decode(latents), atol=0.05)


def test_refined_file_records_the_target_decoder_and_decodes_closer(codec):
    images, _ = _reachable(codec, 1)
    image = tensor_to_image(images[0])
    plain = codec.encode(image, quality=50, effort=0)
    refined = codec.encode(image, quality=50, effort=3)
    assert LatentFile.from_bytes(plain).target_family is None
    assert LatentFile.from_bytes(refined).target_family == "taesd"
    target = image_to_tensor(image)[0]
    assert _float_mse(codec, refined, target) < _float_mse(codec, plain, target)


def test_effort_works_with_target_bytes(codec):
    image = tensor_to_image(_reachable(codec, 1)[0][0])
    limit = len(codec.encode(image, quality=40, effort=0)) + 20
    data = codec.encode(image, target_bytes=limit, effort=1)
    assert len(data) <= limit and LatentFile.from_bytes(data).target_family == "taesd"


def test_target_psnr_gives_the_lowest_quality_reaching_it(codec):
    image = tensor_to_image(_reachable(codec, 1)[0][0])
    latent = codec.latent_of(image)
    files = [codec.pack(latent, image.width, image.height, quality=q) for q in range(1, 101)]
    scores = [psnr(image, codec.decode(data)) for data in (files[0], files[-1])]
    target = sum(scores) / 2
    data = codec.encode(image, target_psnr=target, effort=0)
    quality = files.index(data) + 1
    assert psnr(image, codec.decode(data)) >= target
    assert psnr(image, codec.decode(files[quality - 2])) < target
    with pytest.raises(CodecError, match="cannot reach 99 dB"):
        codec.encode(image, target_psnr=99, effort=0)
    with pytest.raises(ValueError, match="at most one of"):
        codec.encode(image, quality=50, target_psnr=20)


def test_smallest_reaching_searches_the_lowest_quality():
    probes: list[int] = []

    def file_at(q: int) -> bytes:
        probes.append(q)
        return bytes([q])

    assert smallest_reaching(file_at, lambda data: data[0] / 2, 30.0) == bytes([60])
    assert len(probes) <= 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--effort", "12"], "effort must be auto or 0..9"),
        (["-q", "50", "--target-psnr", "30"], "not allowed with"),
    ],
)
def test_cli_rejects_bad_effort_and_conflicting_rates(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", "x.png", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_real_taesd_refinement_beats_the_plain_encoder_after_quantization():
    weights = str(taesd_path())
    codec = Codec(CodecSettings(encoder=weights, decoder=weights, device="cpu"))
    image = Image.open(kodak_path("kodim23.png")).convert("RGB").crop((320, 160, 448, 288))
    latent = codec.latent_of(image)
    pixels, method = image_to_tensor(image), get_method("ec")
    _, scores = refine(pixels, latent[None], codec.decoder, method, 75, 4)
    _, plain = refine(pixels, latent[None], codec.decoder, method, 75, 0)
    assert scores[0] > plain[0] + 0.3


def test_real_taesd_default_cpu_encode_refines_one_step_past_effort_zero():
    """On a CPU the default (`auto`) takes one bfloat16 step: on kodim23 it decodes closer
    than the unrefined file (effort 0) at about the same size."""
    weights = str(taesd_path())
    codec = Codec(CodecSettings(encoder=weights, decoder=weights, device="cpu"))
    image = Image.open(kodak_path("kodim23.png")).convert("RGB")
    refined, plain = codec.encode(image), codec.encode(image, effort=0)
    assert len(refined) < 1.05 * len(plain)
    assert psnr(image, codec.decode(refined)) > psnr(image, codec.decode(plain)) + 0.3
