"""One client cannot stall the site: a real gunicorn at the defaults on the real TAESD, driven
from several loopback addresses (each a client), as an attacker would."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import encode, png_bytes
from tests.servers import Gunicorn, local_path, multipart
from tests.shared import kodak_path, taesd_path

pytestmark = pytest.mark.shared

ATTACKER, VISITOR, MONITOR = "127.0.0.2", "127.0.0.3", "127.0.0.4"
ATTACK_S = 15.0


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, list[str]]]:
    """A server at the defaults (no warming, so every render starts uncached) over 16 Kodak
    photos; the PNG paths of their renders: full size and both thumbnail widths of each."""
    folder = tmp_path_factory.mktemp("abuse")
    weights = str(taesd_path())
    env = {
        "LATENT_GALLERY_ENCODER": weights,
        "LATENT_GALLERY_DECODER": weights,
        "LATENT_GALLERY_WARM_ON_START": "0",
    }
    seeding = Gunicorn(folder / "data", folder / "seed.log", {**env, "LATENT_GALLERY_EFFORT": "0"})
    photos = sorted(kodak_path().glob("*.png"))[:16]
    try:
        seeding.start()
        images = [seeding.stored(*seeding.upload(p.read_bytes(), p.name)) for p in photos]
    finally:
        seeding.stop()
    server = Gunicorn(folder / "data", folder / "gunicorn.log", env).start()
    paths = [
        local_path(image["png_url"]) + suffix
        for image in images
        for suffix in ("", "&w=256", "&w=512")
    ]
    try:
        yield server, paths
    finally:
        server.stop()


def timed(server: Gunicorn, path: str, source: str) -> tuple[int, float]:
    """GET `path` from `source`: its status and seconds."""
    start = time.monotonic()
    status = server.request("GET", path, source=source)[0]
    return status, time.monotonic() - start


def hammer(server: Gunicorn, path: str) -> list[tuple[int, dict[str, str], bytes]]:
    """An attacker's thread: GET `path` again at once after each 503, until a 200 or
    `ATTACK_S` seconds; every answer."""
    answers, end = [], time.monotonic() + ATTACK_S
    while time.monotonic() < end:
        answers.append(server.request("GET", path, source=ATTACKER))
        if answers[-1][0] != 503:
            break
        time.sleep(0.05)
    return answers


def test_a_burst_of_uncached_renders_leaves_the_site_answering(gallery):
    """40 uncached renders at once from one client, each asked again at once after a 503:
    `/healthz` and `/` answer within 1 s throughout, the client's renders past its share get
    503 + Retry-After at once, and another visitor's uncached render is served."""
    server, paths = gallery
    burst, spare = paths[:40], paths[40:]
    with ThreadPoolExecutor(len(burst) + 1) as pool:
        futures = [pool.submit(hammer, server, path) for path in burst]
        time.sleep(1)  # the burst is in
        visitor = pool.submit(timed, server, spare[0], VISITOR)
        probes = []
        while not all(f.done() for f in futures):
            probes += [timed(server, "/healthz", MONITOR), timed(server, "/", MONITOR)]
            time.sleep(0.2)
        answers = [answer for f in futures for answer in f.result()]
        assert visitor.result()[0] == 200
    assert len(probes) >= 10
    assert all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) <= 1.0, probes
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 6, statuses
    assert statuses.count(503) >= 34
    for status, headers, body in answers:
        if status == 503:
            assert int(headers["Retry-After"]) > 0 and b"from one address" in body


def test_a_request_of_40_files_gets_at_most_its_share_into_the_encode_queue(gallery):
    server, _ = gallery
    body, headers = multipart([(png_bytes(seed=n), f"{n}.png") for n in range(40)])
    status, _, data = server.request("POST", "/api/images?wait=0", body, headers, source=ATTACKER)
    answer = json.loads(data)
    assert status == 202
    assert len(answer["jobs"]) == 8  # LATENT_GALLERY_MAX_FILES
    assert [e["status"] for e in answer["errors"]] == [413] * 32
    metrics = server.request("GET", "/metrics")[2].decode()
    depth = float(metrics.split("\nlatent_gallery_encode_queue_depth ")[1].split()[0])
    assert depth <= 8
    for job in answer["jobs"]:
        server.stored(202, {"jobs": [job]})


def test_a_cross_site_form_upload_is_refused_and_stores_nothing(gallery):
    server, _ = gallery
    before = server.listed_ids()
    body, headers = multipart([(png_bytes(), "a.png")])
    for forged in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}):
        status, _, page = server.request("POST", "/upload", body, {**headers, **forged})
        assert status == 403 and b"Cross-site" in page
    assert server.listed_ids() == before


def test_a_huge_image_is_stored_scaled_down_while_visitors_renders_are_served(gallery):
    """A 6000x6000 PNG of one colour (a ~120 KB file) is stored at 2048x2048 (`MAX_SIDE`), and
    uncached renders asked for while it encodes are served."""
    server, paths = gallery
    huge = encode(Image.new("RGB", (6000, 6000), (40, 90, 160)), "PNG", optimize=True)
    assert len(huge) < 200_000
    body, headers = multipart([(huge, "huge.png")])
    status, _, data = server.request("POST", "/api/images?wait=0", body, headers)
    renders = [timed(server, path, VISITOR) for path in paths[41:]]
    image = server.stored(status, json.loads(data))
    assert [status for status, _ in renders] == [200] * len(renders), renders
    assert (image["width"], image["height"]) == (2048, 2048)
    png = server.request("GET", local_path(image["png_url"]) + "&w=256")[2]
    assert Image.open(io.BytesIO(png)).size == (256, 256)


def test_healthz_names_no_path(gallery):
    server, _ = gallery
    status, _, body = server.request("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert str(taesd_path()).encode() not in body and str(Path.cwd()).encode() not in body
