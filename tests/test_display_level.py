"""Large images keep a display latent: what pages show is decoded from it, never from the full
latent; the full size and downloads still come from the full latent (tiny real codec)."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from codec import LatentFile
from tests.conftest import decoder_held, metric, png_bytes, upload, wait_idle
from webapp.gallery import get_gallery
from webapp.render.sizes import DISPLAY_SIDE, display_size, render_widths

DECODES = "latent_gallery_decodes_total"


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_display_size_fits_the_display_square():
    assert display_size(768, 512) is None
    assert display_size(1024, 1024) is None
    assert display_size(2048, 1152) == (1024, 576)
    assert display_size(1152, 2048) == (576, 1024)
    assert render_widths(1152, 2048) == [256, 512, 576, DISPLAY_SIDE]
    assert render_widths(600, 400) == [256, 512, DISPLAY_SIDE]


def test_a_large_upload_stores_a_display_latent_of_the_display_size(app, client):
    image = upload(client, png_bytes(1280, 800))
    store = get_gallery(app).store
    record = store.get(image["id"])
    display = LatentFile.from_bytes(store.read_latent(image["id"], display=True))
    assert (display.width, display.height) == (1024, 640)
    assert record.display_bytes == len(store.read_latent(image["id"], display=True))
    assert record.stored_bytes == record.latent_bytes + record.display_bytes
    small = store.get(upload(client, png_bytes(600, 400))["id"])
    assert small.display_bytes is None
    with pytest.raises(FileNotFoundError):
        store.read_latent(small.id, display=True)


def test_page_renders_decode_the_display_latent_and_the_full_size_the_full_one(
    make_app, decoded_widths
):
    first = make_app()
    image = upload(first.test_client(), png_bytes(1280, 800))
    wait_idle(first)
    app = make_app()  # a restart: nothing cached
    client = app.test_client()
    wait_idle(app)
    decoded_widths.clear()
    display = client.get(f"/i/{image['id']}.avif?w=1024")
    assert display.mimetype == "image/avif" and size_of(display.data) == (1024, 640)
    assert size_of(client.get(f"/i/{image['id']}.avif?w=256").data) == (256, 160)
    assert size_of(client.get(f"/i/{image['id']}.png?w=512").data) == (512, 320)
    assert decoded_widths == [1024]  # the thumbnails came from the display decode's PNG
    assert size_of(client.get(f"/i/{image['id']}.avif").data) == (1280, 800)
    assert decoded_widths == [1024, 1280]


def test_an_image_from_before_display_latents_renders_its_display_from_the_full_latent(
    app, client, decoded_widths
):
    image = upload(client, png_bytes(1280, 800))
    store = get_gallery(app).store
    with store.metadata.engine.begin() as connection:  # as stored before revision 0003
        connection.exec_driver_sql("UPDATE images SET display_bytes = NULL")
    store.blobs.delete(f"{image['id']}.display.sdz")
    wait_idle(app)
    get_gallery(app).cache.discard_where(lambda key: True)
    decoded_widths.clear()
    assert size_of(client.get(f"/i/{image['id']}.avif?w=1024").data) == (1024, 640)
    assert decoded_widths == [1280]


def test_avif_and_png_of_one_render_share_its_decode(make_app):
    first = make_app()
    image = upload(first.test_client(), png_bytes(600, 400))
    wait_idle(first)
    client = make_app(warm_on_start=False).test_client()
    png = client.get(f"/i/{image['id']}.png")
    avif = client.get(f"/i/{image['id']}.avif")
    assert png.mimetype == "image/png" and avif.mimetype == "image/avif"
    assert size_of(png.data) == size_of(avif.data) == (600, 400)
    assert len(avif.data) < len(png.data)
    assert avif.headers["ETag"] != png.headers["ETag"]
    assert metric(client, DECODES) == 1


def test_a_render_whose_decode_is_in_the_model_outlives_the_deadline(make_app):
    [first, second] = [
        upload(make_app().test_client(), png_bytes(64, 48, seed=n)) for n in range(2)
    ]
    app = make_app(decode_timeout=0.5, threads=40)
    client = app.test_client()
    results: dict[str, int] = {}

    def get(image_id: str, address: str) -> None:
        url = f"/i/{image_id}.png"
        response = app.test_client().get(url, environ_base={"REMOTE_ADDR": address})
        results[image_id] = response.status_code

    with decoder_held(app):
        threads = [
            threading.Thread(target=get, args=(image["id"], f"10.0.0.{n}"))
            for n, image in enumerate((first, second))
        ]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        time.sleep(0.7)  # past the deadline: the first is in the model, the second queued
    for thread in threads:
        thread.join(timeout=30)
    assert results == {first["id"]: 200, second["id"]: 503}
    assert metric(client, "latent_gallery_rejected_requests_total", 'reason="deadline"') == 1


def test_a_large_image_s_preview_comes_from_its_display_latent(client):
    image = upload(client, png_bytes(1280, 800))
    preview = client.get(f"/i/{image['id']}.preview.webp")
    assert preview.status_code == 200
    assert size_of(preview.data) == (128, 80)  # 1/8 of the 1024x640 display size
    small = upload(client, png_bytes(600, 400))
    assert size_of(client.get(f"/i/{small['id']}.preview.webp").data) == (75, 50)
