"""The thumbnail decoder: fine-tuning it, the file, which decoder it serves, the codec's
decode straight to a thumbnail's size, and how close its thumbnails come to the full decode's."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from codec import Codec, CodecSettings, SettingsError, load_codec, unpack
from codec.errors import ModelLoadError
from codec.images import open_image, tensor_to_image, thumbnail_size
from codec.measures import psnr
from codec.models import load_autoencoder
from codec.thumbnail_decoder import (
    THUMBNAIL_DECODERS,
    ThumbnailDecoder,
    resize,
    thumbnail_decoder_for,
)
from codec.training.thumbnail_decoder import distillation_pairs, main, train
from tests.conftest import metric, noise, png_bytes, upload, wait_idle, wait_until
from tests.shared import kodak_path, taesd_path
from tests.tiny_models import tiny_kl, tiny_taesd
from webapp.gallery import get_gallery
from webapp.metrics import Metrics
from webapp.render.batcher import DecodeBatcher, Priority
from webapp.render.formats import thumbnail


@pytest.fixture
def tuned(env, tmp_path):
    """A thumbnail decoder file tuned for a few steps for the tiny TAESD (seed 0)."""
    folder = tmp_path / "train"
    folder.mkdir()
    noise(160, 128, seed=1).save(folder / "a.png")
    noise(136, 176, seed=2).save(folder / "b.jpg")
    out = tmp_path / "thumbnail" / "tiny.safetensors"
    argv = ["--images", str(folder), "--steps", "3", "--crop", "24", "--batch", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_tuning_writes_a_thumbnail_decoder_for_its_decoder_only(tuned):
    model, other = tiny_taesd(0), tiny_taesd(1)
    assert THUMBNAIL_DECODERS.read(tuned)[1] == {"decoder": model.rounded_fingerprints[1].hex()}
    thumbs = thumbnail_decoder_for("auto", model, tuned.parent)
    assert isinstance(thumbs, ThumbnailDecoder)
    assert thumbnail_decoder_for("auto", other, tuned.parent) is None
    assert thumbnail_decoder_for("off", model, tuned.parent) is None
    with pytest.raises(ModelLoadError, match="made for other models"):
        thumbnail_decoder_for(str(tuned), other)
    assert thumbs.decoder_fingerprint != model.decoder_fingerprint, "tuning moved nothing"
    latents = torch.randn(1, 4, 5, 7)
    assert thumbs.decode(latents, (0.5, 0.5), 64, 16).shape == (1, 3, 20, 28)  # of 40 x 56
    assert thumbs.decode(latents, (0.25, 1 / 3), 64, 16).shape == (1, 3, 10, 18)  # 18.7 wide
    assert model.decode(latents).shape == (1, 3, 40, 56)  # the decoder itself is untouched


def test_tuning_fits_the_full_decode_resized(env, tmp_path):
    model = tiny_taesd(0)
    codec = Codec(CodecSettings(correction="off"), encoder=model, decoder=model)
    noise(128, 112, seed=3).save(tmp_path / "a.png")
    thumbs = ThumbnailDecoder(model)
    pairs = distillation_pairs(codec, [tmp_path / "a.png"], thumbs)
    assert pairs[0][0].shape[-2:] == (28, 32) and pairs[0][1].shape[-2:] == (112, 128)

    def error() -> float:
        """Squared error at 1/3 scale of both pictures (the photo and its half-size copy)."""
        with torch.no_grad():
            total = 0.0
            for features, full in pairs:
                target = resize(full[None], (1 / 3, 1 / 3), "bicubic")
                image = thumbs.render(features[None], (1 / 3, 1 / 3))
                total += float(torch.mean((image - target) ** 2))
            return total

    before = error()
    train(pairs, thumbs, steps=30, batch=2, crop=24, lr=1e-2)
    assert error() < 0.7 * before
    assert not any(p.requires_grad for p in thumbs.stage.parameters())


def test_codec_decodes_thumbnails_only_with_a_thumbnail_decoder(tuned):
    model = tiny_taesd(0)
    latents = torch.randn(2, 4, 6, 5)
    with_it = Codec(CodecSettings(thumbnail_decoder=str(tuned)), encoder=model, decoder=model)
    assert with_it.decode_latents(latents, (0.5, 0.5)).shape == (2, 3, 24, 20)
    tiled = Codec(
        CodecSettings(thumbnail_decoder=str(tuned), tile=64), encoder=model, decoder=model
    )
    large = torch.randn(1, 4, 12, 20)  # 96 x 160 pixels: 2 x 3 tiles of 64
    whole = with_it.decode_latents(large, (0.3, 0.3))
    in_tiles = tiled.decode_latents(large, (0.3, 0.3))
    assert in_tiles.shape == whole.shape == (1, 3, 28, 48)
    assert torch.mean((in_tiles - whole) ** 2) < 1e-2  # blended tiles, no misplaced one
    plain = Codec(CodecSettings(), encoder=model, decoder=model)
    assert plain.thumbnail_decoder is None  # no file in codec/weights fits a random model
    with pytest.raises(ValueError, match="no thumbnail decoder"):
        plain.decode_latents(latents, (0.5, 0.5))
    with pytest.raises(SettingsError, match="DECODER='sometimes': expected auto, off or a file"):
        load_codec(CodecSettings(thumbnail_decoder="sometimes"))


def test_thumbnails_of_one_latent_shape_but_other_image_sizes_decode_apart(tuned):
    """600x400 and 596x396 photos have 75x50 latents, but their 256-px thumbnails are 171
    and 170 high (other scales): one pass each, each its own size."""
    model = tiny_taesd(0)
    codec = Codec(CodecSettings(effort="0", thumbnail_decoder=str(tuned)), encoder=model,
                  decoder=model)  # fmt: skip
    files = [unpack(codec.compress(png_bytes(w, h)).data, model.space)
             for w, h in ((600, 400), (596, 396))]  # fmt: skip
    assert files[0][1].shape == files[1][1].shape
    batcher = DecodeBatcher(lambda: codec, Metrics(), queue_size=4, batch=8)
    try:
        with codec.thumbnail_decoder.model.exclusive():
            blocker = batcher.submit(*files[0], Priority.INTERACTIVE, None, width=128)
            wait_until(lambda: batcher.decoding == 1)
            jobs = [batcher.submit(*f, Priority.INTERACTIVE, None, width=256) for f in files]
        assert blocker.future.result(timeout=30).shape == (3, 85, 128)
        assert [job.future.result(timeout=30).shape for job in jobs] == [
            (3, 171, 256),
            (3, 170, 256),
        ]
    finally:
        batcher.close(timeout=30)
    samples = {s.name: s.value for s in batcher.metrics.batch_size.collect()[0].samples}
    assert samples["latent_gallery_decode_batch_size_count"] == 3


def test_bad_thumbnail_decoder_files_and_decoders(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="not a thumbnail decoder file"):
        THUMBNAIL_DECODERS.read(junk)
    with pytest.raises(ModelLoadError, match="kl decoders have no thumbnail decoder"):
        ThumbnailDecoder(tiny_kl())


def test_tuning_usage_errors(env, tmp_path, capsys):
    assert main(["--images", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: no images found in --images"
    Image.new("RGB", (64, 64)).save(tmp_path / "small.png")
    assert main(["--images", str(tmp_path), "--crop", "8"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]  # after the progress bars
    assert last_line == "error: crop must be over 18 features"
    assert main(["--images", str(tmp_path), "--crop", "40"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == "error: no training photo is 160 pixels a side"


def decode_counts(client) -> tuple[float, float]:
    """Decodes so far, and how many of them were on the thumbnail decoder."""
    return (
        metric(client, "latent_gallery_decodes_total"),
        metric(client, "latent_gallery_thumbnail_decodes_total"),
    )


def test_gallery_thumbnails_decode_straight_to_their_size_and_nothing_else_does(make_app, tuned):
    """A 256-px thumbnail of a 600-px image is one thumbnail decode and caches no full size;
    the 512-px one (wider than half the image) and the full size take the full decoder."""
    model = tiny_taesd(0)
    settings = CodecSettings(effort="0", thumbnail_decoder=str(tuned))
    codec = Codec(settings, encoder=model, decoder=model)
    image = upload(make_app(codec=codec).test_client(), png_bytes(600, 400))
    client = make_app(codec=codec).test_client()  # a restart: nothing cached
    renderer = get_gallery(client.application).renderer
    small = client.get(f"/i/{image['id']}.png?w=256")
    assert small.status_code == 200
    assert Image.open(io.BytesIO(small.data)).size == (256, 171)
    wait_idle(client.application)
    assert decode_counts(client) == (1, 1)
    assert renderer.cache.get((image["id"], None, "png")) is None
    assert client.get(f"/i/{image['id']}.png?w=512").status_code == 200
    assert client.get(f"/i/{image['id']}.png").status_code == 200
    wait_idle(client.application)
    assert decode_counts(client) == (2, 1)
    warmed = make_app(codec=codec)  # another restart; warming asks for every size at once
    get_gallery(warmed).renderer.warm(get_gallery(warmed).store.get(image["id"]))
    wait_idle(warmed)
    assert decode_counts(warmed.test_client()) == (1, 0)  # thumbnails share the full decode
    assert get_gallery(warmed).renderer.cache.get((image["id"], 256, "avif")) is not None
    plain = make_app(codec=Codec(CodecSettings(effort="0"), encoder=model, decoder=model))
    versions = {get_gallery(app).codec_host.codec.version for app in (plain, warmed)}
    assert len(versions) == 2  # the URLs name the thumbnail decoder's weights too


def test_thumbnails_whose_height_rounds_over_half_the_image(make_app, tuned):
    """A 256-px thumbnail of a 512x343 image is 172 high (171.5 rounded), of a 600x1 one 1
    high: scales just over 1/2, and 1, from the thumbnail decoder all the same."""
    model = tiny_taesd(0)
    codec = Codec(CodecSettings(effort="0", thumbnail_decoder=str(tuned)), encoder=model,
                  decoder=model)  # fmt: skip
    client = make_app(codec=codec).test_client()
    for (width, height), size in (((512, 343), (256, 172)), ((600, 1), (256, 1))):
        image = upload(client, png_bytes(width, height))
        wait_idle(client.application)
        get_gallery(client.application).renderer.cache.discard_where(lambda key: True)
        small = client.get(f"/i/{image['id']}.png?w=256")
        assert small.status_code == 200
        assert Image.open(io.BytesIO(small.data)).size == size
    assert decode_counts(client)[1] == 2


@pytest.mark.shared
def test_shipped_thumbnail_decoder_keeps_real_taesd_thumbnails(tmp_path):
    """The thumbnail decoder in codec/weights serves the real TAESD and was not tuned on
    Kodak: on two Kodak photos (a landscape at scale 1/3, a portrait at 1/2), its 256-px
    thumbnails come within 0.3 dB of the full decode's, resized, on average (24 photos:
    −0.11 dB; the worst, kodim20, −0.45)."""
    weights = str(taesd_path())
    model = load_autoencoder(weights, "cpu")
    codec = Codec(CodecSettings(effort="0"), encoder=model, decoder=model)
    assert codec.thumbnail_decoder is not None, f"none in {THUMBNAIL_DECODERS.folder} for {weights}"
    gaps = []
    for name in ("kodim07.png", "kodim19.png"):
        photo = open_image(kodak_path(name))
        _, latent = unpack(codec.compress(photo).data, model.space)
        z = torch.from_numpy(latent)[None]
        full = tensor_to_image(codec.decode_latents(z)[0])
        width, height = thumbnail_size(photo.width, photo.height, 256)
        scale = (height / photo.height, width / photo.width)
        small = tensor_to_image(codec.decode_latents(z, scale)[0, :, :height, :width])
        reference = thumbnail(photo, 256)
        assert np.asarray(small).shape == np.asarray(reference).shape
        gaps.append(psnr(reference, small) - psnr(reference, thumbnail(full, 256)))
    assert np.mean(gaps) > -0.3 and min(gaps) > -0.5, gaps
