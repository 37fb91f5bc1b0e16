"""Renders ready before they are asked for: `put_decoded` (an upload's own reconstruction, no
decoder pass) and the newest gallery page warmed after a start (tiny real codec; gunicorn)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import metric, noise, png_bytes, upload, wait_idle, wait_until
from tests.servers import Gunicorn
from webapp.gallery import get_gallery
from webapp.render.formats import encode_avif, encode_png, thumbnail
from webapp.render.sizes import rendered_bytes
from webapp.settings import Settings
from webapp.warmup import warm_newest_page, warm_previews

DECODES = "latent_gallery_decodes_total"


def stored(make_app, *sizes: tuple[int, int]) -> list[str]:
    """Upload one image of each size through one app and wait for its renders; the ids. A later
    `make_app()` over the same data starts with an empty cache."""
    app = make_app()
    client = app.test_client()
    ids = [upload(client, png_bytes(w, h, seed=i))["id"] for i, (w, h) in enumerate(sizes)]
    wait_idle(app)
    return ids


def record_of(app, image_id: str):
    return get_gallery(app).store.get(image_id)


def test_put_decoded_caches_the_page_renders_without_a_decode(make_app):
    [image_id] = stored(make_app, (320, 200))
    app = make_app()
    client = app.test_client()
    image = noise(320, 200, seed=7)
    get_gallery(app).renderer.put_decoded(record_of(app, image_id), image)
    wait_idle(app)
    assert client.get(f"/i/{image_id}.avif").data == encode_avif(image)
    thumb = client.get(f"/i/{image_id}.avif?w=256").data
    assert thumb == encode_avif(thumbnail(image, 256))
    assert Image.open(io.BytesIO(thumb)).size == (256, 160)
    assert metric(client, "latent_gallery_cache_hits_total") == 2
    assert metric(client, "latent_gallery_cache_misses_total") == 0
    assert client.get(f"/i/{image_id}.png").data == encode_png(image)  # its own size, kept
    assert client.get(f"/i/{image_id}.png?w=256").data == encode_png(thumbnail(image, 256))
    assert metric(client, DECODES) == 0


def test_put_decoded_makes_display_and_thumbnails_from_the_display_reconstruction(make_app):
    [image_id] = stored(make_app, (1280, 800))
    app = make_app()
    client = app.test_client()
    record = record_of(app, image_id)
    assert record.display_bytes > 0
    image, display = noise(1280, 800, seed=7), noise(1024, 640, seed=8)
    get_gallery(app).renderer.put_decoded(record, image, display)
    wait_idle(app)
    assert client.get(f"/i/{image_id}.avif?w=1024").data == encode_avif(display)
    assert client.get(f"/i/{image_id}.avif?w=256").data == encode_avif(thumbnail(display, 256))
    assert metric(client, "latent_gallery_cache_misses_total") == 0
    assert metric(client, DECODES) == 0


def test_the_newest_page_is_warmed_as_far_as_the_cache_holds_it(make_app):
    ids = stored(make_app, (64, 48), (64, 48), (64, 48))
    app = make_app(cache_bytes=2 * rendered_bytes(64, 48))
    client = app.test_client()
    assert warm_newest_page(get_gallery(app)) == [ids[2], ids[1]]  # newest first, two fit
    wait_idle(app)
    assert metric(client, DECODES) == 2
    for image_id in ids:
        assert client.get(f"/i/{image_id}.avif").status_code == 200
    assert metric(client, "latent_gallery_cache_hits_total") == 2
    assert metric(client, DECODES) == 3  # only the oldest needed a decode


def test_the_newest_page_s_previews_are_cached_without_a_model(make_app):
    ids = stored(make_app, (64, 48), (80, 48))
    app = make_app()
    client = app.test_client()
    cache = get_gallery(app).cache
    assert warm_previews(get_gallery(app)) == ids[::-1]
    for image_id in ids:
        cached = cache.get((image_id, "preview"))
        assert cached and client.get(f"/i/{image_id}.preview.webp").data == cached
    assert metric(client, DECODES) == 0


def test_warm_on_start_is_a_flag():
    assert Settings.from_env({}).warm_on_start is True
    assert Settings.from_env({"LATENT_GALLERY_WARM_ON_START": "off"}).warm_on_start is False
    with pytest.raises(ValueError, match="LATENT_GALLERY_WARM_ON_START='maybe'"):
        Settings.from_env({"LATENT_GALLERY_WARM_ON_START": "maybe"})


def test_a_started_gunicorn_decodes_the_newest_page_before_anyone_asks(env, make_app, tmp_path):
    ids = stored(make_app, (320, 200), (320, 200))  # in tmp_path / "data"
    server = Gunicorn(tmp_path / "data", tmp_path / "gunicorn.log").start()
    try:
        wait_until(lambda: decodes(server) == 2)
        for image_id in ids:
            status, _, body = server.request("GET", f"/i/{image_id}.avif?w=256")
            assert status == 200 and Image.open(io.BytesIO(body)).size == (256, 160)
        assert decodes(server) == 2
        assert "warming the newest 2 images" in server.logs()
        assert "previews of the newest 2 images cached" in server.logs()
    finally:
        server.stop()


def decodes(server: Gunicorn) -> float:
    """The server's decode counter."""
    text = server.request("GET", "/metrics")[2].decode()
    return float(text.split(f"\n{DECODES} ")[1].split()[0])
