"""Render order: a visitor's decode goes ahead of background work, also one it joins (tiny
real codec; the decode thread is held inside a forward pass, jobs queued, then released)."""

from __future__ import annotations

import threading

import pytest

from codec import unpack
from tests.conftest import decoder_held, metric, png_bytes, upload, wait_idle, wait_until
from webapp.gallery import get_gallery
from webapp.metrics import Metrics
from webapp.render.batcher import DecodeBatcher, Priority

WIDTHS = (64, 72, 80)  # one latent width each: a decode's shape says which image it was


@pytest.fixture
def gallery(make_app, decoded_widths) -> tuple:
    """Three stored images (64, 72 and 80 px wide), a fresh app over them (empty cache), and the
    image widths in the order the decoder decodes them."""
    first = make_app()
    client = first.test_client()
    ids = [upload(client, png_bytes(width, 48, seed=width))["id"] for width in WIDTHS]
    wait_idle(first)
    decoded_widths.clear()
    return make_app(), dict(zip(WIDTHS, ids, strict=True)), decoded_widths


def get_in_thread(app, url: str) -> threading.Thread:
    """GET `url` in a new thread (asserting a 200)."""

    def get() -> None:
        assert app.test_client().get(url).status_code == 200

    thread = threading.Thread(target=get)
    thread.start()
    return thread


def test_a_visitor_is_decoded_before_background_work_queued_earlier(gallery):
    app, ids, decoded = gallery
    renderer = get_gallery(app).renderer
    with decoder_held(app):
        renderer.warm(get_gallery(app).store.get(ids[64]))
        wait_until(lambda: renderer.batcher.decoding == 1)  # the 64 px image is in the model
        renderer.warm(get_gallery(app).store.get(ids[72]))
        visitor = get_in_thread(app, f"/i/{ids[80]}.png")
        wait_until(lambda: renderer.queue_depth == 2)
    visitor.join(timeout=30)
    wait_idle(app)
    assert decoded == [64, 80, 72]


def test_a_visitor_moves_the_background_decode_it_joins_ahead(gallery):
    app, ids, decoded = gallery
    renderer = get_gallery(app).renderer
    with decoder_held(app):
        for width in WIDTHS:
            renderer.warm(get_gallery(app).store.get(ids[width]))
            wait_until(lambda: renderer.batcher.decoding == 1)
        visitor = get_in_thread(app, f"/i/{ids[80]}.png")
        wait_until(lambda: metric(app.test_client(), "latent_gallery_coalesced_requests_total"))
    visitor.join(timeout=30)
    wait_idle(app)
    assert decoded == [64, 80, 72]


def test_background_work_goes_one_latent_a_pass_after_the_visitors(tiny_codec):
    space = tiny_codec.decoder.space
    files = {w: tiny_codec.compress(png_bytes(64, 48, seed=w)).data for w in (1, 2)}
    latents = {w: unpack(data, space) for w, data in files.items()}
    batcher = DecodeBatcher(lambda: tiny_codec, Metrics(), queue_size=4, batch=8)
    done: list[str] = []
    try:
        with tiny_codec.render_decoder._lock:
            blocker = batcher.submit(*latents[1], Priority.BACKGROUND, None)
            wait_until(lambda: batcher.decoding == 1)
            late = [batcher.submit(*latents[1], Priority.BACKGROUND, None) for _ in range(2)]
            first = [batcher.submit(*latents[2], Priority.INTERACTIVE, float("inf"))]
            first.append(batcher.submit(*latents[2], Priority.INTERACTIVE, float("inf")))
            for name, jobs in (("background", late), ("interactive", first)):
                for job in jobs:
                    job.future.add_done_callback(lambda _, name=name: done.append(name))
        for job in (blocker, *late, *first):
            assert job.future.result(timeout=30).shape == (3, 48, 64)
    finally:
        batcher.close(timeout=30)
    assert done == ["interactive"] * 2 + ["background"] * 2
    samples = {s.name: s.value for s in batcher.metrics.batch_size.collect()[0].samples}
    assert samples["latent_gallery_decode_batch_size_count"] == 4  # [blocker] [2 visitors] [1] [1]
