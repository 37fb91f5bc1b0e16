"""Upload jobs through the Flask test client (tiny random codec): admission to the bounded encode
queue, the 202 contract and its status URL, the page's upload cards, the no-JS form."""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from codec import Codec, CodecSettings
from tests.conftest import metric, png_bytes, post_images, snapshot, wait_idle, wait_until
from tests.tiny_models import tiny_taesd
from webapp import uploads
from webapp.gallery import get_gallery
from webapp.settings import Settings
from webapp.upload_flow import NOT_STORED
from webapp.uploads import image_id_of

UNKNOWN_JOB = "AAAAAAAAAAAAAAAAAAAAAA"


@contextlib.contextmanager
def encoder_held(app: Flask) -> Iterator[None]:
    """Block the encode thread inside its next encoder forward pass (the model's own lock) until
    the block exits: a slow encode, deterministic, with the real codec."""
    lock = get_gallery(app).codec_host.require().encoder._lock
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def status_path(job: dict) -> str:
    """The path of a job's status URL (the test client wants no host)."""
    return job["status_url"].removeprefix("http://localhost")


def finished(client: FlaskClient, job: dict):
    """Poll a job's status URL until it is no longer pending; that (first final) response."""
    responses = []
    wait_until(
        lambda: responses.append(client.get(status_path(job))) or responses[-1].status_code != 202
    )
    return responses[-1]


def stored(client: FlaskClient, job: dict) -> dict:
    """Poll a job's status URL until the image is stored; that first 200's body."""
    response = finished(client, job)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_full_encode_queue_is_503_before_any_work_and_accepted_uploads_are_stored(make_app):
    app = make_app(encode_queue=1)
    client = app.test_client()
    with encoder_held(app):
        first = post_images(client, (png_bytes(seed=1), "first.png"), query_string={"wait": 0})
        assert first.status_code == 202, first.get_data(as_text=True)
        before = snapshot(app)
        refused = post_images(client, (png_bytes(seed=2), "second.png"))
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) > 0
        message = refused.get_json()["error"]["message"]
        assert "was not stored" in message and "Too many uploads" not in message
        assert snapshot(app) == before
        assert metric(client, "latent_gallery_encode_queue_depth") == 1
    assert (
        metric(client, "latent_gallery_rejected_requests_total", 'reason="encode_queue_full"') == 1
    )
    [job] = first.get_json()["jobs"]
    image = stored(client, job)["image"]
    assert metric(client, "latent_gallery_encode_queue_depth") == 0
    assert image["id"] == image_id_of(job["id"]) and image["delete_key"]
    again = post_images(client, (png_bytes(seed=3), "third.png"))
    assert again.status_code == 201, again.get_data(as_text=True)
    listed = {i["id"] for i in client.get("/api/images").get_json()["images"]}
    assert listed == {image["id"], again.get_json()["images"][0]["id"]}


def test_an_upload_past_the_wait_is_202_and_its_status_url_gives_the_image(make_app, monkeypatch):
    monkeypatch.setenv("LATENT_GALLERY_UPLOAD_WAIT", "0.01")
    app = make_app(upload_wait=Settings.from_env().upload_wait)
    client = app.test_client()
    with encoder_held(app):
        started = time.monotonic()
        response = post_images(client, (png_bytes(seed=1), "slow.png"), (b"", "empty.png"))
        assert time.monotonic() - started < 5  # waited the 0.01 s set, not the default
        assert response.status_code == 202, response.get_data(as_text=True)
        body = response.get_json()
        [job] = body["jobs"]
        assert body["images"] == [] and job["filename"] == "slow.png"
        assert [e["filename"] for e in body["errors"]] == ["empty.png"]
        pending = client.get(status_path(job))
        assert pending.status_code == 202 and pending.get_json()["status"] == "pending"
        assert client.get(f"/api/images/{image_id_of(job['id'])}").status_code == 404
    first = stored(client, job)
    assert first["status"] == "stored" and first["image"]["delete_key"]
    second = client.get(status_path(job)).get_json()
    assert "delete_key" not in second["image"]  # shown once
    image = second["image"]
    assert client.get(f"/api/images/{image['id']}").get_json() == image
    assert client.get(f"/i/{image['id']}.png").status_code == 200

    key = {"X-Delete-Key": first["image"]["delete_key"]}
    assert client.delete(f"/api/images/{image['id']}", headers=key).status_code == 204
    gone = client.get(status_path(job))
    assert gone.status_code == 404 and gone.get_json()["error"]["message"] == NOT_STORED


@pytest.mark.parametrize("job_id", [UNKNOWN_JOB, "not-a-job"])
def test_an_unknown_job_is_404_saying_the_upload_was_not_stored(client, job_id):
    response = client.get(f"/api/uploads/{job_id}")
    assert response.status_code == 404
    message = response.get_json()["error"]["message"]
    assert "not stored" in message and "Send the file again" in message


def test_a_file_that_is_no_image_is_refused_at_once_and_takes_no_place(make_app):
    app = make_app(encode_queue=1)
    client = app.test_client()
    with encoder_held(app):  # the encode thread is busy with a first upload: the queue is full
        post_images(client, (png_bytes(seed=1), "a.png"), query_string={"wait": 0})
        text = (b"Just some text, honest.\n" * 40, "notes.jpg")
        response = post_images(client, text, query_string={"wait": 0})
        assert response.status_code == 400
        assert "not an image in an allowed format" in response.get_json()["error"]["message"]
    refused = 'reason="encode_queue_full"'
    assert metric(client, "latent_gallery_rejected_requests_total", refused) == 0


def test_an_image_broken_past_its_header_fails_its_job_and_its_status_url_gives_the_400(
    make_app,
):
    app = make_app()
    client = app.test_client()
    with encoder_held(app):  # the encode thread is busy with a first upload
        post_images(client, (png_bytes(seed=1), "a.png"), query_string={"wait": 0})
        truncated = (png_bytes(seed=2)[:200], "cut.png")  # the size is read, the pixels are not
        response = post_images(client, truncated, query_string={"wait": 0})
        assert response.status_code == 202
        [job] = response.get_json()["jobs"]
    failed = finished(client, job)
    assert failed.status_code == 400
    assert "Not an acceptable image" in failed.get_json()["error"]["message"]


def test_a_job_lost_with_its_process_is_404_and_a_stored_one_is_200_from_the_database(make_app):
    app = make_app()
    client = app.test_client()
    with encoder_held(app):
        response = post_images(client, (png_bytes(seed=4), "a.png"), query_string={"wait": 0})
        [job] = response.get_json()["jobs"]
        restarted = make_app().test_client()  # same data, an empty job table
        lost = restarted.get(status_path(job))
        assert lost.status_code == 404 and lost.get_json()["error"]["message"] == NOT_STORED
    stored(client, job)
    later = restarted.get(status_path(job))
    assert later.status_code == 200
    assert later.get_json()["image"]["id"] == image_id_of(job["id"])
    assert "delete_key" not in later.get_json()["image"]


@pytest.mark.parametrize("bound", [{"KEEP_S": -1.0}, {"MAX_KEPT": 0}], ids=["expired", "excess"])
def test_finished_jobs_leave_memory_and_their_status_comes_from_the_database(
    make_app, monkeypatch, bound
):
    for name, value in bound.items():
        monkeypatch.setattr(uploads, name, value)
    app = make_app()
    client = app.test_client()
    with encoder_held(app):
        response = post_images(client, (png_bytes(seed=5), "a.png"), query_string={"wait": 0})
        [job] = response.get_json()["jobs"]
        assert client.get(status_path(job)).status_code == 202  # pending jobs are kept
    body = stored(client, job)
    assert body["image"]["id"] == image_id_of(job["id"])
    assert "delete_key" not in body["image"]  # forgotten with the job, never fetched


def test_upload_card_polls_while_encoding_then_becomes_the_image_card(make_app):
    app = make_app()
    client = app.test_client()
    with encoder_held(app):
        response = post_images(client, (png_bytes(seed=6), "photo.png"), query_string={"wait": 0})
        [job] = response.get_json()["jobs"]
        pending = client.get(f"/fragments/uploads/{job['id']}").get_data(as_text=True)
    assert 'data-state="encoding"' in pending and "Encoding…" in pending
    assert f'hx-get="/fragments/uploads/{job["id"]}"' in pending and "every 1s" in pending
    assert "photo.png" in pending
    image_id = image_id_of(job["id"])

    cards = []
    path = f"/fragments/uploads/{job['id']}"
    wait_until(
        lambda: cards.append(client.get(path).get_data(as_text=True)) or "hx-get" not in cards[-1]
    )
    first, second = cards[-1], client.get(path).get_data(as_text=True)
    assert f'id="card-{image_id}"' in first and f'data-upload-job="{job["id"]}"' in first
    assert "data-delete-key=" in first and "data-delete-key=" not in second  # shown once
    assert f'id="card-{image_id}"' in second
    lost = client.get(f"/fragments/uploads/{UNKNOWN_JOB}")
    assert lost.status_code == 200 and 'data-state="error"' in lost.get_data(as_text=True)
    assert "not stored" in lost.get_data(as_text=True) and "hx-get" not in lost.get_data(
        as_text=True
    )


def test_no_js_form_with_an_upload_still_encoding_says_so_and_shows_its_key_later(make_app):
    app = make_app(upload_wait=0.0)
    client = app.test_client()
    client.get("/")
    with client.session_transaction() as session:
        token = session["csrf_token"]
    with encoder_held(app):
        response = client.post(
            "/upload", data={"csrf_token": token, "file": (io.BytesIO(png_bytes()), "a.png")}
        )
        assert response.status_code == 303
        result = response.headers["Location"]
        assert result.startswith("/uploaded?job=")
        page = client.get(result).get_data(as_text=True)
        assert "a.png is still being encoded" in page and "data-delete-key" not in page
    wait_until(lambda: metric(client, "latent_gallery_encode_queue_depth") == 0)
    page = client.get(result).get_data(as_text=True)
    assert len(re.findall(r'data-delete-key="[^"]+"', page)) == 1
    assert "its key was shown before" in client.get(result).get_data(as_text=True)


@pytest.mark.parametrize("effort", ["0", "1"])
def test_an_upload_renders_from_the_encoders_own_reconstruction_when_it_made_one(make_app, effort):
    """No decode after an upload whose encode decoded its latent anyway (refinement in the
    decoder's precision); one background decode (warming) otherwise."""
    model = tiny_taesd()
    codec = Codec(CodecSettings(effort=effort), encoder=model, decoder=model)
    content = png_bytes(64, 48, seed=8)
    reconstruction = codec.compress(content).image
    assert effort != "0" or reconstruction is None  # effort 0 runs no decode
    app = make_app(codec=codec)
    client = app.test_client()
    image = post_images(client, (content, "a.png")).get_json()["images"][0]
    wait_idle(app)
    assert metric(client, "latent_gallery_decodes_total") == (0 if reconstruction else 1)
    png = client.get(f"/i/{image['id']}.png")
    assert png.status_code == 200 and png.data == client.get(f"/i/{image['id']}.png").data
