"""End to end: real gunicorn (gunicorn.conf.py, wsgi.py) with the real TAESD weights."""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.shared import kodak_path, taesd_path

ROOT = Path(__file__).resolve().parents[1]
START_S = 90
REQUEST_S = 120

pytestmark = pytest.mark.shared


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A tiny HTTP client for one gunicorn on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_S)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def upload(self, content: bytes, filename: str) -> tuple[int, dict]:
        boundary = secrets.token_hex(16)
        body = (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="file"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, _, data = self.request("POST", "/api/images", body, headers)
        return status, json.loads(data)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """gunicorn -c gunicorn.conf.py wsgi:app on a free port, terminated afterwards."""
    weights = str(taesd_path())
    port = free_port()
    env = {
        **os.environ,
        "LATENT_GALLERY_BIND": f"127.0.0.1:{port}",
        "LATENT_GALLERY_DATA": str(tmp_path / "data"),
        "LATENT_GALLERY_ENCODER": weights,
        "LATENT_GALLERY_DECODER": weights,
    }
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        server = Server(port)
        deadline = time.monotonic() + START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
            try:
                if server.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn not healthy within {START_S} s:\n{log.read_text()}")
            time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_upload_render_cache_and_delete_over_http(server: Server) -> None:
    photo = kodak_path("kodim23.png").read_bytes()
    status, body = server.upload(photo, "kodim23.png")
    assert status == 201, body
    [image] = body["images"]
    assert (image["width"], image["height"]) == (768, 512)
    assert image["latent_bytes"] < len(photo) / 20

    png_path = f"/i/{image['id']}.png"
    status, headers, png = server.request("GET", png_path)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png)).size == (768, 512)
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    status, _, thumb = server.request("GET", png_path + "?w=256")
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
    assert b"\nlatent_gallery_decodes_total 1.0\n" in metrics  # the upload's warm-up decode

    wrong = server.request("DELETE", f"/api/images/{image['id']}", headers={"X-Delete-Key": "no"})
    assert wrong[0] == 403
    key = {"X-Delete-Key": image["delete_key"]}
    assert server.request("DELETE", f"/api/images/{image['id']}", headers=key)[0] == 204
    assert server.request("GET", png_path)[0] == 404
