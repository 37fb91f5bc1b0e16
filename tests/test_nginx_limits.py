"""nginx's per-address flood limits (deploy/nginx.conf: `limit_req`, `limit_conn`) in front of
one real gunicorn node. Each test sends from its own loopback address (127.0.0.x), so each is
a fresh client to nginx's zones. The numbers are read from the config, which they test."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import png_bytes
from tests.servers import Gunicorn, Nginx, local_path, multipart, unavailable

PAGE = 48  # PNGs a gallery page's first view loads at once: 24 cards, srcset widths
BROWSER_CONNECTIONS = 6  # a browser's connections per host over HTTP/1.1


@dataclass(frozen=True)
class Limits:
    """One location's limits in deploy/nginx.conf."""

    rate: float  # requests a second
    burst: int
    connections: int


def limits(zone: str, connections_zone: str) -> Limits:
    """The `limit_req_zone` rate, `limit_req` burst and `limit_conn` of a zone."""
    text = Nginx.CONFIG.read_text()
    rate = re.search(rf"limit_req_zone \S+ zone={zone}:\S+ rate=(\d+)r/([sm]);", text)
    burst = re.search(rf"limit_req zone={zone} burst=(\d+) nodelay;", text)
    connections = re.search(rf"limit_conn {connections_zone} (\d+);", text)
    assert rate and burst and connections, f"{Nginx.CONFIG} does not limit {zone}"
    per_second = int(rate[1]) / (1 if rate[2] == "s" else 60)
    return Limits(per_second, int(burst[1]), int(connections[1]))


@dataclass
class Proxied:
    """One node and nginx (deploy/nginx.conf) in front of it."""

    node: Gunicorn
    nginx: Nginx

    def posts_reached(self, path: str) -> int:
        """POSTs to `path` the node has logged (nginx's own 429s never reach it)."""
        return self.node.logs().count(f'"POST {path} ')


@pytest.fixture(scope="module")
def proxied(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    """A node on a data folder, whose own upload limit is out of reach (every 429 here is
    nginx's), behind nginx."""
    reason = Nginx.missing()
    if reason:
        unavailable(reason)
    folder = tmp_path_factory.mktemp("nginx-limits")
    env = {
        "LATENT_GALLERY_TRUSTED_PROXIES": "1",
        "LATENT_GALLERY_UPLOAD_RATE": "100000/minute",
        "LATENT_GALLERY_ENCODER": str(tiny_folder),
        "LATENT_GALLERY_DECODER": str(tiny_folder),
        "LATENT_GALLERY_DEVICE": "cpu",
    }
    node = Gunicorn(folder / "node", folder / "node.log", env)
    nginx = Nginx(folder / "nginx", [f"127.0.0.1:{node.port}"])
    try:
        node.start()
        nginx.start()
        yield Proxied(node, nginx)
    finally:
        nginx.stop()
        node.kill()


def assert_limited_by_nginx(status: int, headers: dict[str, str], body: bytes) -> None:
    """nginx's 429: short, uncacheable, with a Retry-After of a few seconds."""
    assert status == 429, (status, body[:200])
    assert 1 <= int(headers["Retry-After"]) <= 5, headers
    assert headers["Cache-Control"] == "no-store", headers
    assert len(body) < 300, body


def test_uploads_past_the_burst_get_429_from_nginx_and_pass_again_after_retry_after(
    proxied: Proxied,
) -> None:
    uploads, client = limits("uploads", "upload_conns"), "127.0.0.2"
    body, headers = multipart([(b"", "empty.png")])  # the node answers 400 at once (no encode)
    reached = proxied.posts_reached("/api/images")
    start = time.monotonic()
    statuses = [
        proxied.nginx.request("POST", "/api/images", body, headers, source=client)[0]
        for _ in range(uploads.burst + 6)
    ]
    freed = int((time.monotonic() - start) * uploads.rate)  # slots the rate freed meanwhile
    passed = uploads.burst + 1
    assert statuses[:passed] == [400] * passed, statuses  # the burst reaches the node
    assert set(statuses[passed:]) <= {400, 429}, statuses
    assert statuses.count(400) <= passed + freed, statuses
    assert statuses.count(429) >= 5 - freed > 0, statuses
    deadline = time.monotonic() + 10  # the node logs a request just after answering it
    while proxied.posts_reached("/api/images") - reached < statuses.count(400):
        assert time.monotonic() < deadline, proxied.node.logs()[-2000:]
        time.sleep(0.05)
    assert proxied.posts_reached("/api/images") - reached == statuses.count(400)

    status, answer_headers, answer = proxied.nginx.request(
        "POST", "/api/images", body, headers, source=client
    )
    assert_limited_by_nginx(status, answer_headers, answer)
    assert answer_headers["Content-Type"] == "application/json"
    assert json.loads(answer)["error"]["status"] == 429  # the app's error shape
    # The page's form counts with the API; listing is not an upload; others are not limited.
    assert proxied.nginx.request("POST", "/upload", body, headers, source=client)[0] == 429
    assert proxied.nginx.request("GET", "/api/images", source=client)[0] == 200
    assert proxied.nginx.request("POST", "/api/images", body, headers, source="127.0.0.3")[0] == 400

    time.sleep(int(answer_headers["Retry-After"]))
    assert proxied.nginx.request("POST", "/api/images", body, headers, source=client)[0] == 400


def test_a_gallery_page_of_renders_is_not_limited_but_a_flood_past_the_burst_is(
    proxied: Proxied,
) -> None:
    renders, client = limits("renders", "render_conns"), "127.0.0.4"
    assert renders.burst >= 2 * PAGE and renders.connections >= BROWSER_CONNECTIONS
    images = [proxied.node.stored(*proxied.node.upload(png_bytes(seed=s), f"{s}.png"))
              for s in range(6)]  # fmt: skip
    urls = [
        local_path(image["png_url"]) + width
        for image in images
        for width in ("", "&w=256", "&w=512")
    ]  # full size cached by the upload's warm-up, thumbnails not yet

    def fetch(path: str) -> tuple[int, dict[str, str], bytes]:
        return proxied.nginx.request("GET", path, source=client)

    start = time.monotonic()
    with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
        for _ in range(2):  # a page's first view, then the next page
            page = list(pool.map(fetch, itertools.islice(itertools.cycle(urls), PAGE)))
            assert [status for status, _, _ in page] == [200] * PAGE
        flood = list(pool.map(fetch, itertools.islice(itertools.cycle(urls), renders.burst)))
    freed = int((time.monotonic() - start) * renders.rate) + 1
    statuses = [status for status, _, _ in flood]
    assert set(statuses) == {200, 429}, statuses
    assert 2 * PAGE + statuses.count(200) <= renders.burst + 1 + freed, statuses
    for response in flood:
        if response[0] == 429:
            assert_limited_by_nginx(*response)

    # Limited for PNGs only, and for this address only.
    assert_limited_by_nginx(*fetch(urls[0]))
    image_id = images[0]["id"]
    assert fetch(f"/i/{image_id}.sdz")[0] == 200
    assert fetch(f"/i/{image_id}.preview.webp")[0] == 200
    assert proxied.nginx.request("GET", urls[0], source="127.0.0.5")[0] == 200


def test_concurrent_uploads_past_limit_conn_get_429(proxied: Proxied) -> None:
    uploads, client = limits("uploads", "upload_conns"), "127.0.0.6"
    body, headers = multipart([(b"", "empty.png")])
    stalled: list[socket.socket] = []
    try:
        for _ in range(uploads.connections):  # headers sent, the body never: each one in flight
            sock = socket.create_connection(
                ("127.0.0.1", proxied.nginx.port), timeout=10, source_address=(client, 0)
            )
            sock.sendall(b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Length: 1000\r\n\r\n")  # fmt: skip
            stalled.append(sock)
        time.sleep(0.3)  # nginx reads their headers
        response = proxied.nginx.request("POST", "/api/images", body, headers, source=client)
        assert_limited_by_nginx(*response)
        assert 'limiting connections by zone "upload_conns"' in proxied.nginx.log.read_text()
        other = proxied.nginx.request("POST", "/api/images", body, headers, source="127.0.0.7")
        assert other[0] == 400
    finally:
        for sock in stalled:
            sock.close()
