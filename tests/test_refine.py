"""Encoder-side refinement, effort resolution and rate control (`--target-psnr`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from codec import Codec, CodecError, CodecSettings, LatentFile, load_codec, pipeline, unpack
from codec.cli import main
from codec.hardware import detect
from codec.images import image_to_tensor, tensor_to_image
from codec.measures import psnr
from codec.methods import get_method
from codec.models.taesd import search_proxy
from codec.plan import Costs, choose_plan, search_models
from codec.rate_control import smallest_reaching
from codec.refine import EFFORT_STEPS, dequantizer, refine, resolve_effort, steps_for
from codec.settings import MAX_EFFORT
from codec.transform import latent_of
from tests.shared import kodak_path, taesd_path
from tests.tiny_models import tiny_kl, tiny_taesd

FLOAT32_SEARCH = Costs(encode=1.0, step={"float32": 2.0}, score={"float32": 1.0})


@pytest.fixture(scope="module")
def codec() -> Codec:
    """The tiny model with searches and renders in float32 on any CPU (measured, a CPU with
    native bf16 would search and render in bf16: see test_hardware for that plan)."""
    model = tiny_taesd()
    plan = choose_plan(detect("cpu"), FLOAT32_SEARCH)
    settings = CodecSettings(tile=128, render_precision="model")
    return load_codec(settings, encoder=model, decoder=model, plan=plan)


def _reachable(codec: Codec, count: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    """Images `(count, 3, 48, 64)` the tiny decoder can draw exactly, and latents near theirs
    (a random decoder cannot draw a real photo, so refinement could not show a gain on one)."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(count, 4, 6, 8, generator=generator) * 2
    start = truth + torch.randn(truth.shape, generator=generator)
    return codec.decode_latents(truth), start.numpy()


def _float_mse(codec: Codec, data: bytes, image: torch.Tensor) -> float:
    """Pixel MSE of a file's decoded float image (before 8-bit rounding)."""
    _, latent = unpack(data, codec.decoder.space)
    return (codec.decode_latents(torch.from_numpy(latent)[None])[0] - image).square().mean().item()


def test_effort_maps_to_increasing_steps_from_the_plain_encoder():
    assert steps_for(0) == 0
    assert list(EFFORT_STEPS) == sorted(set(EFFORT_STEPS))
    assert len(EFFORT_STEPS) == MAX_EFFORT + 1
    with pytest.raises(ValueError, match=r"0\.\.9"):
        steps_for(10)


def _never() -> int:
    raise AssertionError("auto effort asked for although not needed")


def test_auto_effort_is_the_machine_plan_for_images_that_fit_a_tile():
    assert resolve_effort("auto", (64, 64), 1024, lambda: 4) == 4
    assert resolve_effort("auto", (2048, 64), 1024, _never) == 0
    assert resolve_effort(7, (64, 64), 1024, _never) == 7
    assert resolve_effort("3", (64, 64), 1024, _never) == 3
    with pytest.raises(ValueError, match="neither auto nor an integer"):
        resolve_effort("high", (64, 64), 1024, _never)


def test_explicit_effort_on_an_image_larger_than_a_tile_is_refused():
    with pytest.raises(CodecError, match=r"at most 1024x1024.*2048x64.*effort 0"):
        resolve_effort(2, (2048, 64), 1024, _never)
    assert resolve_effort(0, (2048, 64), 1024, _never) == 0


@pytest.mark.parametrize("name", ["ec", "q8", "palette"])
def test_dequantizer_is_exactly_what_the_file_holds(name):
    rng = np.random.default_rng(1)
    latent = rng.normal(0, 1.5, (4, 6, 10)).astype(np.float32)
    method = get_method(name)
    compressed = method.compress(latent, 60)
    stored = method.decompress(compressed.params, compressed.payload, latent.shape)
    np.testing.assert_array_equal(dequantizer(method, 60)(latent), stored)


@pytest.mark.parametrize("steps", [1, 2, 8])
def test_refine_reports_the_psnr_and_image_of_the_latent_it_chose(codec, steps):
    images, latents = _reachable(codec)
    method = get_method("ec")
    quantize = dequantizer(method, 50)
    refined = refine(images, latents, codec.decoder, method, 50, steps)
    assert refined.latents.shape == latents.shape and refined.latents.dtype == np.float32
    for image, latent, score, picture in zip(
        images, refined.latents, refined.psnr, refined.images, strict=True
    ):
        decoded = codec.decoder.decode(torch.from_numpy(quantize(latent))[None])[0]
        assert torch.allclose(picture, decoded, atol=1e-4)
        mse = (decoded - image).square().mean().item()
        assert score == pytest.approx(-10 * np.log10(mse), abs=1e-3)


def test_refine_gains_over_the_plain_latent_with_enough_steps(codec):
    images, latents = _reachable(codec)
    method = get_method("ec")
    plain = refine(images, latents, codec.decoder, method, 50, 0).psnr
    assert refine(images, latents, codec.decoder, method, 50, 8).psnr.mean() > plain.mean() + 0.02


def test_refine_keeps_the_encoder_latent_when_the_search_only_makes_it_worse(codec):
    images, latents = _reachable(codec)
    method = get_method("ec")
    plain = refine(images, latents, codec.decoder, method, 50, 0)
    wild = refine(images, latents, codec.decoder, method, 50, 2, lr=50.0)
    np.testing.assert_array_equal(wild.latents, latents)
    np.testing.assert_allclose(wild.psnr, plain.psnr, atol=1e-4)


def test_a_twin_is_a_channels_last_copy_in_another_precision(codec):
    assert codec.decoder.twin(torch.float32) is codec.decoder
    twin = codec.decoder.twin(torch.bfloat16)
    assert twin.dtype == torch.bfloat16 and codec.decoder.dtype == torch.float32
    assert twin.exclusive() is not codec.decoder.exclusive()
    assert next(twin.module.parameters()).dtype == torch.bfloat16
    assert next(codec.decoder.module.parameters()).dtype == torch.float32
    latents = torch.from_numpy(_reachable(codec, 1)[1])
    assert torch.allclose(twin.decode(latents), codec.decoder.decode(latents), atol=0.05)


def test_the_taesd_proxy_decodes_at_half_resolution_on_its_own_copy(codec):
    proxy = codec.decoder.proxy()
    assert proxy.pixel_scale == 2 and codec.decoder.pixel_scale == 1
    assert proxy.dtype == codec.decoder.dtype and proxy.exclusive() is not codec.decoder.exclusive()
    latents = torch.from_numpy(_reachable(codec, 2)[1])
    assert codec.decoder.decode(latents).shape == (2, 3, 48, 64)
    assert proxy.decode(latents).shape == (2, 3, 24, 32)
    assert search_proxy(tiny_kl()) is None


def test_refine_on_the_proxy_scores_against_the_photo_at_half_scale(codec):
    images, latents = _reachable(codec)
    proxy, method = codec.decoder.proxy(), get_method("ec")
    quantize = dequantizer(method, 50)
    refined = refine(images, latents, proxy, method, 50, 1)
    assert refined.images.shape == (2, 3, 24, 32)
    for image, latent, score, picture in zip(
        F.avg_pool2d(images, 2), refined.latents, refined.psnr, refined.images, strict=True
    ):
        decoded = proxy.decode(torch.from_numpy(quantize(latent))[None])[0]
        assert torch.allclose(picture, decoded, atol=1e-4)
        mse = (decoded - image).square().mean().item()
        assert score == pytest.approx(-10 * np.log10(mse), abs=1e-3)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (13, 7)])
def test_refine_on_the_proxy_takes_odd_sizes(codec, height, width):
    images = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    latents = np.zeros((1, 4, -(-height // 8), -(-width // 8)), np.float32)
    refined = refine(images, latents, codec.decoder.proxy(), get_method("ec"), 50, 1)
    assert refined.images.shape == (1, 3, -(-height // 2), -(-width // 2))


def test_compress_hands_back_the_reconstruction_only_when_it_is_the_renders(codec):
    image = tensor_to_image(_reachable(codec, 1)[0][0])
    assert codec.compress(image, quality=50, effort=0).image is None
    encoded = codec.compress(image, quality=50, effort=2)
    search = search_models(codec.plan, codec.decoder).decoder
    assert search.dtype == codec.render_decoder.dtype == torch.float32
    rendered = np.asarray(codec.decompress(encoded.data), dtype=np.int16)
    assert np.abs(np.asarray(encoded.image, dtype=np.int16) - rendered).max() <= 1


def test_no_reconstruction_when_renders_decode_in_another_precision(monkeypatch):
    model = tiny_taesd()
    plan = choose_plan(detect("cpu"), FLOAT32_SEARCH)
    codec = load_codec(CodecSettings(tile=128), encoder=model, decoder=model, plan=plan)
    monkeypatch.setattr(pipeline, "fast_dtype", lambda *_: torch.bfloat16)  # as on native bf16
    assert codec.render_decoder.dtype == torch.bfloat16
    image = tensor_to_image(_reachable(codec, 1)[0][0])
    assert codec.compress(image, quality=50, effort=2).image is None


def test_refined_file_records_the_decoder_it_is_tuned_for_and_decodes_closer(codec):
    images, _ = _reachable(codec, 1)
    image = tensor_to_image(images[0])
    plain = codec.compress(image, quality=50, effort=0).data
    refined = codec.compress(image, quality=50, effort=3).data
    assert LatentFile.from_bytes(plain).tuned_for is None
    assert LatentFile.from_bytes(refined).tuned_for == "taesd"
    target = image_to_tensor(image)[0]
    assert _float_mse(codec, refined, target) < _float_mse(codec, plain, target)


def test_effort_works_with_target_bytes(codec):
    image = tensor_to_image(_reachable(codec, 1)[0][0])
    limit = len(codec.compress(image, quality=40, effort=0).data) + 20
    data = codec.compress(image, target_bytes=limit, effort=1).data
    assert len(data) <= limit and LatentFile.from_bytes(data).tuned_for == "taesd"


def test_target_psnr_gives_the_lowest_quality_reaching_it(codec):
    image = tensor_to_image(_reachable(codec, 1)[0][0])
    latent = latent_of(codec, image)
    files = [codec.compress(image, latent=latent, quality=q, effort=0).data for q in range(1, 101)]
    scores = [psnr(image, codec.decompress(data)) for data in (files[0], files[-1])]
    target = sum(scores) / 2
    data = codec.compress(image, target_psnr=target, effort=0).data
    quality = files.index(data) + 1
    assert psnr(image, codec.decompress(data)) >= target
    assert psnr(image, codec.decompress(files[quality - 2])) < target
    with pytest.raises(CodecError, match="cannot reach 99 dB"):
        codec.compress(image, target_psnr=99, effort=0)
    with pytest.raises(ValueError, match="at most one of"):
        codec.compress(image, quality=50, target_psnr=20)


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
    codec = load_codec(CodecSettings(encoder=weights, decoder=weights, device="cpu"))
    image = Image.open(kodak_path("kodim23.png")).convert("RGB").crop((320, 160, 448, 288))
    latent = latent_of(codec, image, corrected=False)
    pixels, method = image_to_tensor(image), get_method("ec")
    search = search_models(codec.plan, codec.decoder).decoder
    scores = refine(pixels, latent[None], search, method, 75, 4).psnr
    plain = refine(pixels, latent[None], search, method, 75, 0).psnr
    assert scores[0] > plain[0] + 0.3


def test_real_taesd_proxy_step_is_not_worse_than_effort_zero_by_the_decoder():
    """`auto` on a plan that searches on the proxy (as on an AVX2 CPU): kodim23's file decodes,
    by the real decoder, no worse than the unrefined one (effort 0), at about the same size."""
    weights = str(taesd_path())
    costs = Costs(encode=1.0, step={"float32": 9.0}, score={"float32": 9.0},
                  proxy_step={"float32": 0.5}, proxy_score={"float32": 0.5})  # fmt: skip
    plan = choose_plan(detect("cpu"), costs)
    codec = load_codec(CodecSettings(encoder=weights, decoder=weights, device="cpu"), plan=plan)
    image = Image.open(kodak_path("kodim23.png")).convert("RGB")
    encoded, plain = codec.compress(image, effort="auto"), codec.compress(image, effort=0).data
    assert plan.search == "proxy" and encoded.image is None
    assert len(encoded.data) < 1.05 * len(plain)
    decoded = codec.decompress(encoded.data)
    assert psnr(image, decoded) > psnr(image, codec.decompress(plain)) - 0.05


def test_real_taesd_one_step_refines_past_effort_zero_in_the_planned_precision():
    """One step, in the precision this machine's plan chose, decodes kodim23 closer than the
    unrefined file (effort 0) at about the same size."""
    weights = str(taesd_path())
    codec = load_codec(CodecSettings(encoder=weights, decoder=weights, device="cpu"))
    image = Image.open(kodak_path("kodim23.png")).convert("RGB")
    refined, plain = (codec.compress(image, effort=e).data for e in (1, 0))
    assert len(refined) < 1.05 * len(plain)
    assert psnr(image, codec.decompress(refined)) > psnr(image, codec.decompress(plain)) + 0.3
