"""Previews from the latent: the map's fit, file, space binding, and `/i/<id>.preview.webp`."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from codec import Codec, CodecSettings, unpack
from codec.errors import ModelLoadError
from codec.preview import (
    PREVIEWS,
    PreviewMap,
    features,
    preview_for,
    preview_of_file,
    save_preview,
    shipped_preview,
)
from codec.spaces import SD1, SDXL
from codec.training.preview import fit
from codec.training.preview import main as fit_main
from tests.conftest import png_bytes, upload
from tests.tiny_models import tiny_taesd
from webapp.gallery import get_gallery
from webapp.settings import Settings


def random_map(seed: int = 0) -> PreviewMap:
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.1, (3, 46)).astype(np.float32)
    return PreviewMap("sd1", 4, weight, rng.uniform(0.3, 0.7, 3).astype(np.float32))


def test_features_are_neighbourhoods_then_channel_products():
    latent = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    inputs = features(latent)
    assert inputs.shape == (9 * 2 + 3, 2, 3)
    np.testing.assert_array_equal(inputs[8:10], latent)  # the centre of the 3x3 neighbourhood
    np.testing.assert_array_equal(inputs[0, 0], [0, 0, 1])  # up-left, edges replicated
    np.testing.assert_array_equal(
        inputs[18:], [latent[0] ** 2, latent[0] * latent[1], latent[1] ** 2]
    )


def test_fit_recovers_a_map_with_its_bias():
    truth = random_map()
    rng = np.random.default_rng(1)
    pairs = []
    for shape in ((4, 16, 19), (4, 15, 17)):
        latent = rng.normal(0, 1, shape).astype(np.float32)
        rgb = np.tensordot(truth.weight, features(latent), axes=1) + truth.bias[:, None, None]
        pairs.append((latent, rgb))
    fitted = fit(SD1, pairs)
    assert fitted.space == "sd1"
    np.testing.assert_allclose(fitted.weight, truth.weight, atol=1e-4)
    np.testing.assert_allclose(fitted.bias, truth.bias, atol=1e-4)


def test_fit_refuses_no_pictures_and_a_wrong_channel_count():
    with pytest.raises(ValueError, match="no pictures"):
        fit(SD1, [])
    latent = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="3 channels"):
        fit(SD1, [(latent, np.zeros((3, 4, 4)))])


def test_apply_clips_to_bytes_and_image_crops_the_padding(tiny_codec: Codec):
    preview = random_map()
    latent = np.random.default_rng(2).normal(0, 30, (4, 5, 6)).astype(np.float32)
    rgb = preview.apply(latent)
    assert rgb.shape == (5, 6, 3) and rgb.dtype == np.uint8
    assert {0, 255} <= set(np.unique(rgb))  # values far outside [0, 1] are clipped
    data = tiny_codec.compress(Image.new("RGB", (41, 17), (200, 30, 90)), effort=0).data
    header, dequantized = unpack(data, tiny_codec.decoder.space)
    assert dequantized.shape[1:] == (3, 6)  # 17 and 41 pixels padded to 24 and 48
    assert preview.image(header, dequantized).size == (6, 3)  # ceil(41 / 8), ceil(17 / 8)


def test_saved_map_reads_back_and_binds_to_its_space(tmp_path: Path):
    preview = random_map()
    save_preview(preview, tmp_path / "sd1.safetensors", notes="test")
    read, _ = PREVIEWS.read(tmp_path / "sd1.safetensors")
    np.testing.assert_array_equal(read.weight, preview.weight)
    np.testing.assert_array_equal(read.bias, preview.bias)
    assert preview_for(SD1, tmp_path).space == "sd1"
    assert preview_for(SDXL, tmp_path) is None


def test_a_file_that_is_no_map_is_refused_with_the_command_to_write_one(tmp_path: Path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros((3, 4), np.float32)}, str(path), metadata={"format": "x"})
    with pytest.raises(ModelLoadError, match=r"python -m codec\.training\.preview"):
        PREVIEWS.read(path)
    save_preview(PreviewMap("sd1", 4, np.zeros((3, 9), np.float32), np.zeros(3, np.float32)), path)
    with pytest.raises(ModelLoadError, match="expected"):
        PREVIEWS.read(path)


def test_the_shipped_map_serves_sd1_only():
    shipped = shipped_preview(SD1)
    assert shipped is not None and shipped.weight.shape == (3, 46)
    assert shipped_preview(SDXL) is None


def test_a_latent_file_of_another_space_gets_no_preview():
    model = tiny_taesd(space=SDXL)
    data = Codec(CodecSettings(), encoder=model, decoder=model).compress(png_bytes(), effort=0).data
    assert preview_of_file(data) is None


def settled_decodes(app) -> float:
    """The app's decode count once its renderer is idle (uploads may warm renders)."""
    renderer, deadline = get_gallery(app).renderer, time.monotonic() + 60
    while not renderer.idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    return get_gallery(app).metrics.decodes._value.get()


def test_preview_endpoint_serves_a_small_webp_without_decoding(make_app):
    app = make_app(previews=True)
    client = app.test_client()
    image = upload(client, png_bytes(100, 60))
    for page in ("/", f"/i/{image['id']}"):
        html = client.get(page).get_data(as_text=True)
        assert f'class="preview" src="/i/{image["id"]}.preview.webp"' in html
    before = settled_decodes(app)
    response = client.get(f"/i/{image['id']}.preview.webp")
    assert response.status_code == 200 and response.mimetype == "image/webp"
    assert Image.open(io.BytesIO(response.data), formats=["WEBP"]).size == (13, 8)
    assert response.cache_control.immutable and response.cache_control.max_age == 31536000
    again = client.get(
        f"/i/{image['id']}.preview.webp", headers={"If-None-Match": response.headers["ETag"]}
    )
    assert again.status_code == 304
    assert settled_decodes(app) == before
    cache = get_gallery(app).cache
    assert cache.get((image["id"], "preview")) == response.data
    deleted = app.test_client().delete(  # an API client: no browser session, no CSRF token
        f"/api/images/{image['id']}", headers={"X-Delete-Key": image["delete_key"]}
    )
    assert deleted.status_code == 204
    assert cache.get((image["id"], "preview")) is None
    assert client.get(f"/i/{image['id']}.preview.webp").status_code == 404


def test_previews_off_leaves_them_out_of_the_pages(make_app):
    client = make_app(previews=False).test_client()
    image = upload(client)
    assert "preview.webp" not in client.get("/").get_data(as_text=True)
    assert "preview.webp" not in client.get(f"/i/{image['id']}").get_data(as_text=True)


def test_preview_of_an_image_in_another_space_is_a_clear_404(make_app):
    model = tiny_taesd(space=SDXL)
    client = make_app(codec=Codec(CodecSettings(), encoder=model, decoder=model)).test_client()
    image = upload(client)
    response = client.get(f"/i/{image['id']}.preview.webp")
    assert response.status_code == 404
    assert "latent space" in response.get_data(as_text=True)
    assert client.get("/i/nosuchimage.preview.webp").status_code == 404


def test_previews_setting_reads_a_flag_and_names_itself_when_bad():
    assert Settings.from_env({}).previews is True
    assert Settings.from_env({"LATENT_GALLERY_PREVIEWS": "0"}).previews is False
    with pytest.raises(ValueError, match="LATENT_GALLERY_PREVIEWS='sometimes'"):
        Settings.from_env({"LATENT_GALLERY_PREVIEWS": "sometimes"})


@pytest.mark.usefixtures("env")
def test_fit_command_writes_a_map_for_the_encoders_space(tmp_path: Path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        (photos / f"{seed}.png").write_bytes(png_bytes(64, 48, seed))
    out = tmp_path / "maps" / "sd1.safetensors"
    assert fit_main(["--images", str(photos), "--out", str(out)]) == 0
    assert "4 pictures" in capsys.readouterr().out  # two photos and their half-size copies
    assert preview_for(SD1, out.parent).channels == 4
    assert fit_main(["--images", str(tmp_path / "maps")]) == 2  # no images there
