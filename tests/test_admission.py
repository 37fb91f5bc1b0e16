"""Admission by cost: files per request, the encode queue's places, wait slots per client, the
fair decode order, and background decodes kept small (tiny real codec, Flask test client)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.conftest import (
    decoder_held,
    metric,
    png_bytes,
    post_images,
    upload,
    wait_idle,
    wait_until,
)
from tests.test_uploads import encoder_held
from webapp.admission import WaitSlots
from webapp.gallery import get_gallery
from webapp.render.batcher import DecodeJob, JobQueue, Priority
from webapp.render.service import WARM_FULL_PIXELS


def test_files_past_the_queue_bound_are_refused_one_by_one_and_the_rest_accepted(make_app):
    app = make_app(encode_queue=4, max_files=50)
    client = app.test_client()
    files = [(png_bytes(seed=n), f"{n}.png") for n in range(40)]
    with encoder_held(app):
        response = post_images(client, *files, query_string={"wait": 0})
        assert response.status_code == 202
        body = response.get_json()
        assert [job["filename"] for job in body["jobs"]] == ["0.png", "1.png", "2.png", "3.png"]
        assert metric(client, "latent_gallery_encode_queue_depth") == 4
        refused = body["errors"]
        assert [e["filename"] for e in refused] == [f"{n}.png" for n in range(4, 40)]
        assert {e["status"] for e in refused} == {503}
        assert all("already encoding 4 uploads, its limit" in e["message"] for e in refused)
        full = post_images(client, (png_bytes(seed=99), "late.png"))
        assert full.status_code == 503 and int(full.headers["Retry-After"]) > 0
    wait_until(lambda: metric(client, "latent_gallery_encode_queue_depth") == 0)
    assert len(client.get("/api/images").get_json()["images"]) == 4


def test_a_request_brings_at_most_max_files(make_app):
    client = make_app(max_files=3).test_client()
    files = [(png_bytes(seed=n), f"{n}.png") for n in range(5)]
    response = post_images(client, *files)
    assert response.status_code == 201
    body = response.get_json()
    assert len(body["images"]) == 3
    refused = [(e["filename"], e["status"]) for e in body["errors"]]
    assert refused == [("3.png", 413), ("4.png", 413)]
    assert "At most 3 files" in body["errors"][0]["message"]


def test_files_refused_by_the_rate_limit_are_not_stored_and_others_are(make_app):
    app = make_app(upload_rate=(2, 60.0))
    client = app.test_client()
    response = post_images(client, *[(png_bytes(seed=n), f"{n}.png") for n in range(3)])
    assert response.status_code == 201
    body = response.get_json()
    assert len(body["images"]) == 2
    [error] = body["errors"]
    assert (error["filename"], error["status"]) == ("2.png", 429)
    assert len(client.get("/api/images").get_json()["images"]) == 2


def test_wait_slots_lend_per_client_and_in_all():
    slots = WaitSlots(total=3, per_client=2)
    with slots.slot("a") as one, slots.slot("a") as two, slots.slot("a") as three:
        assert (one, two, three) == (True, True, False)
        with slots.slot("b") as other, slots.slot("c") as past_total:
            assert (other, past_total) == (True, False)
            assert slots.held == 3
    assert slots.held == 0
    assert WaitSlots.for_threads(16).total == 12 and WaitSlots.for_threads(16).per_client == 6


def test_one_clients_burst_gets_503_at_once_and_leaves_slots_for_others(make_app):
    """Threads 8: 4 wait slots, 2 per client. With the decoder busy, a client's third
    uncached render is refused at once; another client's render still waits and is served."""
    first = make_app()
    images = [upload(first.test_client(), png_bytes(seed=n)) for n in range(4)]
    app = make_app(threads=8)
    renderer = get_gallery(app).renderer

    def get(image: dict, address: str):
        client = app.test_client()
        return client.get(image["png_url"], environ_base={"REMOTE_ADDR": address})

    with ThreadPoolExecutor(4) as pool:
        with decoder_held(app):
            waiting = [pool.submit(get, image, "192.0.2.1") for image in images[:2]]
            wait_until(lambda: renderer.waits.held == 2)
            refused = get(images[2], "192.0.2.1")
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
            assert "at most 2 from one address" in refused.get_data(as_text=True)
            other = pool.submit(get, images[3], "192.0.2.2")
            wait_until(lambda: renderer.waits.held == 3)
        assert [f.result().status_code for f in [*waiting, other]] == [200, 200, 200]
    assert metric(app.test_client(), "latent_gallery_rejected_requests_total", 'reason="busy"') == 1


def job(client: str = "", priority: Priority = Priority.INTERACTIVE) -> DecodeJob:
    """A job for the queue alone (which reads neither its header nor its latent)."""
    return DecodeJob(None, np.zeros(1), priority, None, client=client)


def test_the_decode_queue_serves_clients_fairly():
    """Six jobs of one client, then one of another: the other's goes second, not seventh;
    with the first job already taken, third (one decode in flight, one ahead)."""
    queue = JobQueue(64)
    burst = [job("a") for _ in range(6)]
    for queued in burst:
        queue.put(queued)
    visitor = job("b")
    queue.put(visitor)
    order = [queue.take(1, 0)[0] for _ in range(7)]
    assert order == [burst[0], visitor, *burst[1:]]

    queue = JobQueue(64)
    burst = [job("a") for _ in range(6)]
    for queued in burst:
        queue.put(queued)
    taken = queue.take(1, 0)[0]
    visitor = job("b")
    queue.put(visitor)
    assert [taken, *(queue.take(1, 0)[0] for _ in range(6))] == [*burst[:2], visitor, *burst[2:]]


def test_background_work_waits_for_every_visitor():
    queue = JobQueue(64)
    background = job(priority=Priority.BACKGROUND)
    queue.put(background)
    visitors = [job("a"), job("b")]
    for queued in visitors:
        queue.put(queued)
    assert [queue.take(1, 0)[0] for _ in range(3)] == [*visitors, background]


@pytest.mark.parametrize(("width", "height"), [(1600, 1000), (600, 400)])
def test_an_upload_warms_its_full_size_only_if_small(make_app, width, height):
    """The renders an upload makes in the background, as pages show them (AVIF): the full
    size only up to `WARM_FULL_PIXELS`, the display render of a large image, the thumbnails."""
    app = make_app()
    image = upload(app.test_client(), png_bytes(width, height))
    wait_idle(app)
    cache = get_gallery(app).cache
    small = width * height <= WARM_FULL_PIXELS
    widths = [None, 1024, 512, 256, 128]
    warmed = [w for w in widths if (image["id"], w, "avif") in cache]
    assert warmed == [None if small else 1024, 512, 256]


def test_uploads_past_max_side_are_stored_scaled_down_and_say_so(make_app):
    client = make_app(max_side=100).test_client()
    image = upload(client, png_bytes(300, 120))
    assert (image["width"], image["height"]) == (100, 40)
    assert (image["source_width"], image["source_height"]) == (300, 120)
    small = upload(client, png_bytes(80, 60))
    assert (small["source_width"], small["source_height"]) == (80, 60)
    page = client.get(f"/i/{image['id']}").get_data(as_text=True)
    assert "stored at 100 × 40 from 300 × 120" in page
    assert "stored at" not in client.get(f"/i/{small['id']}").get_data(as_text=True)


def test_an_upload_waits_for_its_encode_only_while_a_slot_is_free(make_app):
    """Wait slots held by others: the upload is accepted and answered 202 at once."""
    app = make_app(threads=5)  # one wait slot
    client = app.test_client()
    slots = get_gallery(app).waits
    release = threading.Event()

    def hold() -> None:
        with slots.slot("192.0.2.9"):
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        wait_until(lambda: slots.held == 1)
        response = post_images(client, (png_bytes(), "a.png"))
        assert response.status_code == 202
    finally:
        release.set()
        holder.join()
    wait_until(lambda: metric(client, "latent_gallery_encode_queue_depth") == 0)
    assert len(client.get("/api/images").get_json()["images"]) == 1
