"""End to end: real gunicorn (gunicorn.conf.py, wsgi.py) with the real TAESD weights."""

from __future__ import annotations

import io
import json
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.servers import Gunicorn
from tests.shared import kodak_path, taesd_path

pytestmark = pytest.mark.shared


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Gunicorn]:
    """gunicorn -c gunicorn.conf.py wsgi:app on a free port, stopped afterwards."""
    weights = str(taesd_path())
    env = {"LATENT_GALLERY_ENCODER": weights, "LATENT_GALLERY_DECODER": weights}
    server = Gunicorn(tmp_path / "data", tmp_path / "gunicorn.log", env)
    try:
        yield server.start()
    finally:
        server.stop()


def test_upload_render_cache_and_delete_over_http(server: Gunicorn) -> None:
    photo = kodak_path("kodim23.png").read_bytes()
    status, body = server.upload(photo, "kodim23.png")
    assert status == 201, body
    [image] = body["images"]
    assert (image["width"], image["height"]) == (768, 512)
    assert image["latent_bytes"] < len(photo) / 20

    png_path = image["png_url"].removeprefix(server.url)
    status, headers, png = server.request("GET", png_path)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png)).size == (768, 512)
    assert headers["Cache-Control"] == "public, max-age=31536000, s-maxage=300, immutable"
    status, _, thumb = server.request("GET", png_path + "&w=256")
    assert status == 200 and Image.open(io.BytesIO(thumb)).size == (256, 171)

    timings = []
    for _ in range(10):
        start = time.perf_counter()
        assert server.request("GET", png_path)[2] == png
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.1, timings  # cached: no decode

    status, _, empty = server.request("GET", png_path, headers={"If-None-Match": headers["ETag"]})
    assert (status, empty) == (304, b"")

    status, _, health = server.request("GET", "/healthz")
    assert status == 200 and json.loads(health)["status"] == "ok"
    status, _, metrics = server.request("GET", "/metrics")
    assert status == 200
    decodes = re.search(rb"\nlatent_gallery_decodes_total (\S+)\n", metrics)
    assert float(decodes[1]) <= 1  # the upload's warm-up decode, none from its reconstruction

    wrong = server.request("DELETE", f"/api/images/{image['id']}", headers={"X-Delete-Key": "no"})
    assert wrong[0] == 403
    key = {"X-Delete-Key": image["delete_key"]}
    assert server.request("DELETE", f"/api/images/{image['id']}", headers=key)[0] == 204
    assert server.request("GET", png_path)[0] == 404


def test_sigterm_during_the_upload_warm_up_decode_exits_cleanly(server: Gunicorn) -> None:
    """The worker stops its decode thread before exiting: no abort from a torch call cut off."""
    status, body = server.upload(kodak_path("kodim23.png").read_bytes(), "kodim23.png")
    assert status == 201, body
    server.stop()
    assert server.process is not None and server.process.returncode == 0
    logs = server.logs()
    assert "Worker exiting" in logs
    assert "SIGABRT" not in logs and "terminate called" not in logs, logs
