"""Rendering on demand: PNG caching and ETags, thumbnails, warming, single-flight,
micro-batching, backpressure and deadlines, health and metrics (tiny real codec)."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from codec import Codec, CodecSettings
from tests.conftest import (
    decoder_held,
    metric,
    png_bytes,
    post_images,
    upload,
    wait_idle,
    wait_until,
)
from tests.tiny_models import tiny_taesd
from webapp.gallery import get_gallery
from webapp.render.batcher import auto_batch
from webapp.settings import Settings

DECODES = "latent_gallery_decodes_total"


def uploaded(make_app, count: int = 1, width: int = 64, height: int = 48) -> list[dict]:
    """Upload `count` images through one app and wait for its warming to end; a later
    `make_app()` over the same data folder starts with an empty cache."""
    app = make_app()
    files = [(png_bytes(width, height, seed), f"{seed}.png") for seed in range(count)]
    images = post_images(app.test_client(), *files).get_json()["images"]
    wait_idle(app)
    return images


def in_thread(client, url: str) -> tuple[threading.Thread, list]:
    """GET `url` in a new thread; the response lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(client.get(url)))
    thread.start()
    return thread, result


def wait_decoding(app) -> None:
    """Wait until the decode thread has taken its job off the queue, and past the batch window."""
    renderer = get_gallery(app).renderer
    wait_until(lambda: renderer.queue_depth == 0 and not renderer.idle())
    time.sleep(0.1)


def test_png_is_immutable_with_an_etag_and_304(client):
    image = upload(client, png_bytes(80, 56))
    response = client.get(image["png_url"])
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert Image.open(io.BytesIO(response.data)).size == (80, 56)
    cache = response.headers["Cache-Control"]
    assert cache == "public, max-age=31536000, s-maxage=300, immutable"
    etag = response.headers["ETag"]
    again = client.get(image["png_url"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    thumb = client.get(f"{image['png_url']}&w=256")
    assert thumb.headers["ETag"] == etag  # 80 px wide: w=256 is the full-size render


def test_png_urls_carry_the_decoder_version_and_a_new_decoder_redirects_old_ones(make_app):
    old_app = make_app()
    image = upload(old_app.test_client())
    old_version = get_gallery(old_app).codec_host.codec.version
    assert image["png_url"] == f"http://localhost/i/{image['id']}.png?v={old_version}"

    new_app = make_app(codec=Codec(CodecSettings(), encoder=tiny_taesd(1), decoder=tiny_taesd(1)))
    client = new_app.test_client()
    new_version = get_gallery(new_app).codec_host.codec.version
    assert new_version != old_version
    new_url = f"/i/{image['id']}.png?w=256&v={new_version}"
    [listed] = client.get("/api/images").get_json()["images"]
    assert listed["png_url"].endswith(f"/i/{image['id']}.png?v={new_version}")
    moved = client.get(f"/i/{image['id']}.png?v={old_version}&w=256")
    assert moved.status_code == 302 and moved.headers["Location"] == new_url
    assert moved.headers["Cache-Control"] == "no-cache"
    current = client.get(new_url)
    assert current.status_code == 200 and "immutable" in current.headers["Cache-Control"]
    unversioned = client.get(f"/i/{image['id']}.png?w=256")
    assert unversioned.status_code == 200 and unversioned.data == current.data
    assert unversioned.headers["Cache-Control"] == "public, no-cache"
    assert unversioned.headers["ETag"] == current.headers["ETag"]


def test_cached_png_is_served_from_memory(client):
    image = upload(client)
    client.get(f"/i/{image['id']}.png")
    hits = metric(client, "latent_gallery_cache_hits_total")
    start = time.perf_counter()
    for _ in range(20):
        assert client.get(f"/i/{image['id']}.png").status_code == 200
    per_request = (time.perf_counter() - start) / 20
    assert metric(client, "latent_gallery_cache_hits_total") == hits + 20
    assert per_request < 0.05


def test_thumbnails_come_in_fixed_widths(client):
    image = upload(client, png_bytes(320, 200))
    thumb = client.get(f"/i/{image['id']}.png?w=256")
    assert Image.open(io.BytesIO(thumb.data)).size == (256, 160)
    full = client.get(f"/i/{image['id']}.png").data
    assert client.get(f"/i/{image['id']}.png?w=512").data == full  # never upscaled
    for bad in ("300", "abc", "-256", ""):
        response = client.get(f"/i/{image['id']}.png?w={bad}")
        assert response.status_code == 400 and response.mimetype == "text/html"


def test_upload_warms_the_page_renders_with_one_decode(app, client):
    image = upload(client, png_bytes(600, 400))
    wait_idle(app)
    assert metric(client, DECODES) == 1
    sizes = [
        Image.open(io.BytesIO(client.get(f"/i/{image['id']}.avif{query}").data)).size
        for query in ("", "?w=256", "?w=512")
    ]
    assert sizes == [(600, 400), (256, 171), (512, 341)]
    assert metric(client, "latent_gallery_cache_misses_total") == 0
    assert metric(client, DECODES) == 1


def test_thumbnail_of_a_cached_full_size_needs_no_decode(make_app):
    [image] = uploaded(make_app, width=600, height=400)
    client = make_app().test_client()
    client.get(f"/i/{image['id']}.png")
    assert Image.open(io.BytesIO(client.get(f"/i/{image['id']}.png?w=256").data)).size == (256, 171)
    assert metric(client, DECODES) == 1


def test_32_concurrent_requests_for_one_uncached_png_decode_once(make_app):
    """32 visitors (32 addresses, on a server with threads enough for them to wait)."""
    [image] = uploaded(make_app)
    app = make_app(threads=40)
    client = app.test_client()
    url = f"/i/{image['id']}.png"
    with ThreadPoolExecutor(32) as pool, decoder_held(app):
        futures = [
            pool.submit(app.test_client().get, url, environ_base={"REMOTE_ADDR": f"10.0.0.{n}"})
            for n in range(32)
        ]
        wait_until(lambda: metric(client, "latent_gallery_coalesced_requests_total") == 31)
    responses = [future.result() for future in futures]
    assert [r.status_code for r in responses] == [200] * 32
    assert len({r.data for r in responses}) == 1
    assert metric(client, DECODES) == 1


@pytest.mark.parametrize(("batch", "passes", "singles"), [(8, 2, 1), (None, 4, 4)])
def test_same_shape_latents_share_one_forward_pass_if_batching(make_app, batch, passes, singles):
    """`LATENT_GALLERY_BATCH=8`: 4 visitors waiting on the same-shape images cost 2 passes (the
    first alone, then 3); `auto` on a CPU decodes one per pass."""
    images = uploaded(make_app, count=4)
    app = make_app(render_batch=batch)
    client = app.test_client()
    with decoder_held(app):
        first = in_thread(client, f"/i/{images[0]['id']}.png")
        wait_decoding(app)
        rest = [in_thread(client, f"/i/{image['id']}.png") for image in images[1:]]
        wait_until(lambda: get_gallery(app).renderer.queue_depth == 3)
    for thread, result in [first, *rest]:
        thread.join(timeout=30)
        assert result[0].status_code == 200
    assert metric(client, DECODES) == 4
    assert metric(client, "latent_gallery_decode_seconds_count") == passes
    assert metric(client, "latent_gallery_decode_batch_size_bucket", 'le="1.0"') == singles


def test_batch_setting():
    assert Settings.from_env({}).render_batch is None
    assert Settings.from_env({"LATENT_GALLERY_BATCH": "Auto"}).render_batch is None
    assert Settings.from_env({"LATENT_GALLERY_BATCH": "4"}).render_batch == 4
    with pytest.raises(ValueError, match=r"^LATENT_GALLERY_BATCH='0': expected a positive integer"):
        Settings.from_env({"LATENT_GALLERY_BATCH": "0"})
    assert (auto_batch(torch.device("cpu")), auto_batch(torch.device("cuda"))) == (1, 8)


def test_full_queue_is_503_with_retry_after(make_app):
    images = uploaded(make_app, count=3)
    app = make_app(render_queue=1)
    client = app.test_client()
    with decoder_held(app):
        decoding = in_thread(client, f"/i/{images[0]['id']}.png")
        wait_decoding(app)
        queued = in_thread(client, f"/i/{images[1]['id']}.png")
        wait_until(lambda: get_gallery(app).renderer.queue_depth == 1)
        refused = client.get(f"/i/{images[2]['id']}.png")
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert refused.mimetype == "text/html"
    for thread, result in (decoding, queued):
        thread.join(timeout=30)
        assert result[0].status_code == 200
    assert metric(client, "latent_gallery_rejected_requests_total", 'reason="queue_full"') == 1
    assert client.get(f"/i/{images[2]['id']}.png").status_code == 200


def test_decode_past_its_deadline_is_503_and_finishes_for_later(make_app):
    [image] = uploaded(make_app)
    app = make_app(decode_timeout=0.3)
    client = app.test_client()
    with decoder_held(app):
        start = time.monotonic()
        response = client.get(f"/i/{image['id']}.png")
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert 0.3 <= time.monotonic() - start < 5
    wait_idle(app)
    assert client.get(f"/i/{image['id']}.png").status_code == 200
    assert metric(client, DECODES) == 1
    assert metric(client, "latent_gallery_rejected_requests_total", 'reason="deadline"') == 1


def test_latent_file_download_decodes_to_the_served_png(app, client):
    image = upload(client)
    response = client.get(f"/i/{image['id']}.sdz")
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == f"attachment; filename={image['id']}.sdz"
    assert "immutable" in response.headers["Cache-Control"]
    decoded = get_gallery(app).codec_host.require().decompress(response.data)
    png = Image.open(io.BytesIO(client.get(f"/i/{image['id']}.png").data))
    assert np.array_equal(np.asarray(decoded), np.asarray(png))


def test_delete_evicts_the_deleted_images_renders_only(app, client):
    deleted, kept = upload(client, png_bytes(seed=1)), upload(client, png_bytes(seed=2))
    for image in (deleted, kept):
        client.get(f"/i/{image['id']}.preview.webp")
    wait_idle(app)
    cache = get_gallery(app).cache

    def cached(image_id: str) -> list[tuple]:
        keys = [(image_id, "preview"), *((image_id, None, fmt) for fmt in ("png", "avif"))]
        return [key for key in keys if key in cache]

    assert len(cached(deleted["id"])) == len(cached(kept["id"])) == 3
    kept_bytes = sum(len(cache.get(key)) for key in cached(kept["id"]))
    client.delete(f"/api/images/{deleted['id']}", headers={"X-Delete-Key": deleted["delete_key"]})
    assert cached(deleted["id"]) == [] and len(cached(kept["id"])) == 3
    assert metric(client, "latent_gallery_cache_bytes") == kept_bytes


def test_healthz_once_the_models_are_loaded(app, client):
    response = client.get("/healthz")
    assert response.status_code == 200
    codec = get_gallery(app).codec_host.codec
    assert response.get_json() == {
        "status": "ok",
        "latent_space": codec.decoder.space.name,
        "method": codec.settings.method,
        "correction": codec.correction is not None,
        "encode_plan": None,
        "queue_depth": 0,
        "cache_bytes": get_gallery(app).cache.bytes,
    }


def test_healthz_shows_the_encode_plan_once_the_first_encode_measured_it(make_app):
    """Loading the models measures nothing (a restarted server's renders start at once); the
    first encode at `auto` effort measures the plan."""
    model = tiny_taesd()
    app = make_app(codec=Codec(CodecSettings(effort="auto"), encoder=model, decoder=model))
    client = app.test_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["encode_plan"] is None
    upload(client)
    wait_idle(app)
    plan = client.get("/healthz").get_json()["encode_plan"]
    measured = get_gallery(app).codec_host.codec.measured_plan
    assert measured is not None and plan == json.loads(json.dumps(measured.as_dict()))
    assert plan["search"] in {"full", "proxy", "none"} and plan["seconds"]["encode"] > 0


def test_healthz_503_when_the_model_cannot_load_names_no_path(
    make_app, tmp_path, monkeypatch, caplog
):
    missing = tmp_path / "no-weights"  # a folder without the weights' files
    missing.mkdir()
    monkeypatch.setenv("LATENT_GALLERY_ENCODER", str(missing))
    monkeypatch.setenv("LATENT_GALLERY_DECODER", str(missing))
    client = make_app(codec=None).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert "no-weights" not in response.get_data(as_text=True)
    assert "no-weights" in caplog.text
    refused = post_images(client, (png_bytes(), "a.png"))
    assert refused.status_code == 503 and "not loaded" in refused.get_json()["error"]["message"]


def test_metrics_expose_the_render_counters(client):
    text = client.get("/metrics").get_data(as_text=True)
    for name in (
        "latent_gallery_decodes_total",
        "latent_gallery_decode_seconds_bucket",
        "latent_gallery_cache_hits_total",
        "latent_gallery_cache_misses_total",
        "latent_gallery_cache_bytes",
        "latent_gallery_coalesced_requests_total",
        "latent_gallery_queue_depth",
    ):
        assert f"\n{name}" in text
    assert "# TYPE latent_gallery_rejected_requests_total counter" in text
