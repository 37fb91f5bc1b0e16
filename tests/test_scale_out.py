"""Two gunicorn nodes on shared PostgreSQL, S3 (moto) and Redis, behind nginx (deploy/nginx.conf):
one gallery, whichever node answers. Tiny random models: the servers are the point here."""

from __future__ import annotations

import io
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import png_bytes
from tests.servers import (
    Gunicorn,
    MotoS3,
    Nginx,
    Postgres,
    Redis,
    multipart,
    unavailable,
)

UPLOAD_RATE = 30  # a minute, per client address


@dataclass
class Cluster:
    """Nodes `a` and `b` and nginx in front of both, on one backend and one Redis."""

    a: Gunicorn
    b: Gunicorn
    nginx: Nginx

    def decodes(self) -> float:
        """Decodes by both nodes so far."""
        return sum(_metric(node, "latent_gallery_decodes_total") for node in (self.a, self.b))


@pytest.fixture(scope="module")
def cluster(
    postgres: Postgres, moto_s3: MotoS3, tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A fresh database (`latent-gallery db upgrade`) and bucket, Redis, two nodes configured
    only through the README's variables, and nginx; one cluster for the module, whose last test
    kills a node."""
    for server in (Redis, Nginx):
        reason = server.missing()
        if reason:
            unavailable(reason)
    folder = tmp_path_factory.mktemp("cluster")
    unique = f"t{secrets.token_hex(8)}"
    redis = Redis(folder / "redis.log").start()
    env = {
        **moto_s3.env,
        "LATENT_GALLERY_DATABASE_URL": postgres.create_database(unique),
        "LATENT_GALLERY_STORAGE_URL": f"s3://{moto_s3.create_bucket(unique)}/latents",
        "LATENT_GALLERY_REDIS_URL": redis.url,
        "LATENT_GALLERY_TRUSTED_PROXIES": "1",
        "LATENT_GALLERY_UPLOAD_RATE": f"{UPLOAD_RATE}/minute",
        "LATENT_GALLERY_ENCODER": str(tiny_folder),
        "LATENT_GALLERY_DECODER": str(tiny_folder),
        "LATENT_GALLERY_DEVICE": "cpu",
        "LATENT_GALLERY_THREADS": "4",
    }
    nodes = [Gunicorn(folder / name, folder / f"{name}.log", env) for name in ("a", "b")]
    nginx = Nginx(folder / "nginx", [f"127.0.0.1:{node.port}" for node in nodes])
    try:
        nodes[0].cli("db", "upgrade")
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(Gunicorn.start, nodes))
        nginx.start()
        yield Cluster(*nodes, nginx)
    finally:
        nginx.stop()
        for node in nodes:
            node.kill()
        redis.stop()


def from_(client: str) -> dict[str, str]:
    """Headers of a request sent by `client` through one trusted proxy."""
    return {"X-Forwarded-For": client}


def upload(node: Gunicorn | Nginx, seed: int, client: str = "198.51.100.1") -> dict:
    """Upload one random PNG through `node`; its JSON."""
    body, headers = multipart([(png_bytes(seed=seed), f"{seed}.png")])
    status, _, data = node.request("POST", "/api/images", body, {**headers, **from_(client)})
    assert status == 201, data
    return json.loads(data)["images"][0]


def test_an_upload_on_one_node_is_listed_rendered_downloaded_and_deleted_through_the_other(
    cluster: Cluster,
) -> None:
    image = upload(cluster.a, seed=1)
    assert cluster.b.listed_ids() == [image["id"]]
    status, _, png = cluster.b.request("GET", image["png_url"].removeprefix(cluster.a.url))
    assert status == 200 and Image.open(io.BytesIO(png)).size == (64, 48)
    status, _, latent = cluster.b.request("GET", f"/i/{image['id']}.sdz")
    assert status == 200 and latent == cluster.a.request("GET", f"/i/{image['id']}.sdz")[2]

    path = f"/api/images/{image['id']}"
    assert (
        cluster.b.request("DELETE", path, headers={"X-Delete-Key": image["delete_key"]})[0] == 204
    )
    for node in (cluster.a, cluster.b):
        assert node.request("GET", path)[0] == 404
        assert node.request("GET", f"/i/{image['id']}.png")[0] == 404
    for node in (cluster.a, cluster.b):
        assert not [p for p in node.data.rglob("*") if p.is_file() and p.suffix == ".sdz"]


def test_nginx_sends_every_render_of_an_image_to_one_node_and_the_rest_round_robin(
    cluster: Cluster,
) -> None:
    images = [upload(cluster.nginx, seed) for seed in range(6)]
    decodes = settled(cluster.decodes)  # after the uploads' warm-up renders
    for image in images:
        url = image["png_url"].removeprefix(cluster.nginx.url)
        for width in ("", "&w=256", "&w=512", "", "&w=256"):
            assert cluster.nginx.request("GET", url + width)[0] == 200
    for image in images:
        served_by = [
            node for node in (cluster.a, cluster.b) if f"/i/{image['id']}.png" in node.logs()
        ]
        assert len(served_by) == 1, image["id"]
    assert cluster.decodes() - decodes <= len(images)  # at most one decode per image
    metadata = f"/api/images/{images[0]['id']}"
    for _ in range(4):
        assert cluster.nginx.request("GET", metadata)[0] == 200
    for node in (cluster.a, cluster.b):
        assert f"GET {metadata} " in node.logs()


def test_sessions_and_the_upload_rate_limit_are_shared_by_the_nodes(cluster: Cluster) -> None:
    status, headers, page = cluster.a.request("GET", "/", headers=from_("198.51.100.2"))
    assert status == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.decode())[1]
    body, form = multipart([(png_bytes(seed=2), "2.png")])
    for sent_token, expected in (("stale", 403), (token, 201)):
        headers = {**form, **from_("198.51.100.2"), "Cookie": cookie, "X-CSRF-Token": sent_token}
        assert cluster.b.request("POST", "/api/images", body, headers)[0] == expected

    client, empty = from_("203.0.113.7"), multipart([(b"", "empty.png")])
    for count in range(UPLOAD_RATE):  # invalid uploads: counted, answered fast (400)
        node = (cluster.a, cluster.b)[count % 2]
        assert node.request("POST", "/api/images", empty[0], {**empty[1], **client})[0] == 400
    for node in (cluster.a, cluster.b):
        status, headers, _ = node.request("POST", "/api/images", empty[0], {**empty[1], **client})
        assert status == 429 and int(headers["Retry-After"]) >= 1
    other = from_("203.0.113.8")
    assert cluster.b.request("POST", "/api/images", empty[0], {**empty[1], **other})[0] == 400


def test_kill_9_of_the_node_taking_an_upload_burst_loses_no_acknowledged_upload(
    cluster: Cluster,
) -> None:
    acknowledged: list[str] = []
    started = threading.Event()

    def send(seed: int) -> None:
        body, headers = multipart([(png_bytes(seed=seed), f"{seed}.png")])
        try:
            status, _, data = cluster.nginx.request("POST", "/api/images", body, headers)
        except OSError:
            return
        if status == 201:
            acknowledged.extend(image["id"] for image in json.loads(data)["images"])
            started.set()

    # 20 uploads: with the 6 above, within the app's rate limit; those past nginx's burst
    # (deploy/nginx.conf) are answered 429 and not acknowledged
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(send, seed) for seed in range(UPLOAD_RATE - 10)]
        assert started.wait(60), cluster.a.logs()
        # nginx sends a client's uploads to one node (hash of its address): kill that one
        killed, other = sorted((cluster.a, cluster.b), key=lambda node: -uploads_from_nginx(node))
        killed.kill()
        for future in futures:
            future.result()
    assert acknowledged
    assert set(acknowledged) <= set(other.listed_ids())
    assert set(acknowledged) <= set(cluster.nginx.listed_ids())  # nginx skips the dead node
    for image_id in acknowledged:
        status, _, png = other.request("GET", f"/i/{image_id}.png")
        assert status == 200 and Image.open(io.BytesIO(png)).size == (64, 48)

    first, second = repair(other), repair(other)
    assert first["orphan rows"] == 0, first  # every acknowledged row kept its file
    assert second == {"temp files": 0, "orphan files": 0, "orphan rows": 0, "young kept": 0}
    assert set(acknowledged) <= set(other.listed_ids())


def uploads_from_nginx(node: Gunicorn) -> int:
    """How many uploads nginx (127.0.0.1) has sent the node so far."""
    return len(re.findall(r"127\.0\.0\.1 - - \[[^]]+\] \"POST /api/images", node.logs()))


def settled(read: Callable[[], float], timeout: float = 60) -> float:
    """`read()` once two reads a second apart agree."""
    end, value = time.monotonic() + timeout, read()
    while time.monotonic() < end:
        time.sleep(1)
        value, previous = read(), value
        if value == previous:
            return value
    raise AssertionError(f"still changing after {timeout} s: {value}")


def repair(node: Gunicorn) -> dict[str, int]:
    """`latent-gallery repair --grace 0` with the node's settings (the cluster's stores)."""
    output = node.cli("repair", "--grace", "0")
    counts = dict(part.rsplit(": ", 1) for part in output.strip().split(", "))
    return {name: int(count) for name, count in counts.items()}


def _metric(node: Gunicorn, name: str) -> float:
    text = node.request("GET", "/metrics")[2].decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0
