"""Two gunicorn nodes behind nginx (deploy/nginx.conf) on PostgreSQL, S3 (moto) and Redis.

    python -m benchmarks.load_cluster --weights DIR --kodak DIR [--images 4] [--duration 20]

Seeds `--images` Kodak photos, then measures, each time from empty caches (nodes restarted):
- decodes per image when every URL of each image (full size and both thumbnail widths, each
  `--repeats` times) is fetched through nginx (`hash $uri consistent`), against the same
  requests sent round-robin to the nodes (expected: 1 against up to 2);
- then, all renders cached, `--clients` threads fetching cached PNGs through nginx for
  `--duration` seconds: requests/s and p50/p99 latency.
Loopback only; the machine is named in the header. Prints a table (and writes `--json`).
Requests come from many loopback addresses (127.1.x.y), as from many clients: nginx limits
each client address (deploy/nginx.conf), and one address would be refused past its burst.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from benchmarks.load import percentile
from codec.hardware import detect
from tests.servers import Gunicorn, MotoS3, Nginx, Postgres, Redis, multipart

WIDTHS = ("", "&w=256", "&w=512")


def decodes(node: Gunicorn) -> float:
    """The node's `latent_gallery_decodes_total`."""
    text = node.request("GET", "/metrics")[2].decode()
    match = re.search(r"^latent_gallery_decodes_total (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


@contextmanager
def restarted(nodes: list[Gunicorn]) -> Iterator[None]:
    """Restart the nodes (empty PNG caches) and stop them after the block."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(Gunicorn.start, nodes))
    try:
        yield
    finally:
        for node in nodes:
            node.stop()


def client_address(client: int, request: int) -> str:
    """The loopback address request `request` of client `client` is sent from: one in 254
    per client, so that no address comes near nginx's per-address limits."""
    return f"127.1.{client % 256}.{request % 254 + 1}"


def fetch_all(targets: list[Gunicorn | Nginx], urls: list[str], repeats: int) -> None:
    """GET every URL `repeats` times (4 threads), the i-th request to `targets[i % n]`."""
    requests = [url for url in urls for _ in range(repeats)]
    random.Random(0).shuffle(requests)

    def get(number: int, target: Gunicorn | Nginx, url: str) -> int:
        return target.request("GET", url, source=client_address(0, number))[0]

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(get, itertools.count(), itertools.cycle(targets), requests))
    if set(statuses) != {200}:
        raise RuntimeError(f"statuses {sorted(set(statuses))}")


def cached_load(nginx: Nginx, urls: list[str], clients: int, duration: float) -> list[float]:
    """Seconds per request of `clients` threads fetching cached PNGs for `duration` s."""
    times: list[float] = []
    lock, end = threading.Lock(), time.monotonic() + duration

    def client(seed: int) -> None:
        rng, sent = random.Random(seed), itertools.count()
        while time.monotonic() < end:
            start = time.perf_counter()
            source = client_address(1 + seed, next(sent))
            status = nginx.request("GET", rng.choice(urls), source=source)[0]
            elapsed = time.perf_counter() - start
            if status != 200:
                raise RuntimeError(f"cached PNG answered {status}")
            with lock:
                times.append(elapsed)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return times


def main() -> int:
    """Start the cluster, seed it, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="../shared/weights/taesd")
    parser.add_argument("--kodak", type=Path, default=Path("../shared/images/kodak"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="requests of each URL per phase")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    for server in (Postgres, Redis, Nginx):
        reason = server.missing()
        if reason:
            raise SystemExit(reason)
    photos = [path.read_bytes() for path in sorted(args.kodak.glob("*.png"))[: args.images]]
    with tempfile.TemporaryDirectory(prefix="load-cluster-") as tmp:
        folder = Path(tmp)
        postgres, s3 = Postgres().start(), MotoS3(folder / "moto.log").start()
        redis = Redis(folder / "redis.log").start()
        try:
            env = {
                **s3.env,
                "LATENT_GALLERY_DATABASE_URL": postgres.create_database("gallery"),
                "LATENT_GALLERY_STORAGE_URL": f"s3://{s3.create_bucket('gallery')}/latents",
                "LATENT_GALLERY_REDIS_URL": redis.url,
                "LATENT_GALLERY_TRUSTED_PROXIES": "1",
                "LATENT_GALLERY_UPLOAD_RATE": "100000/minute",
                "LATENT_GALLERY_ENCODER": args.weights,
                "LATENT_GALLERY_DECODER": args.weights,
                "LATENT_GALLERY_WARM_ON_START": "0",
                "LATENT_GALLERY_EFFORT": "0",  # seeding: encode quality is not measured here
                "LATENT_GALLERY_UPLOAD_WAIT": "600",  # a 201 for each seed, however loaded
                "LATENT_GALLERY_DECODE_TIMEOUT": "600",  # no deadline 503 moves a render
                "LATENT_GALLERY_LOG_LEVEL": "warning",
            }
            nodes = [Gunicorn(folder / n, folder / f"{n}.log", env) for n in ("a", "b")]
            nodes[0].cli("db", "upgrade")
            nginx = Nginx(folder / "nginx", [f"127.0.0.1:{node.port}" for node in nodes])
            nginx.start()
            try:
                figures = measure(args, nodes, nginx, photos)
            finally:
                nginx.stop()
        finally:
            redis.stop()
            s3.stop()
            postgres.stop()
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def measure(
    args: argparse.Namespace, nodes: list[Gunicorn], nginx: Nginx, photos: list[bytes]
) -> dict:
    """Seed, then the two routing phases and the cached load; the figures."""
    with restarted(nodes):
        urls = []
        for number, photo in enumerate(photos):
            body, headers = multipart([(photo, "kodak.png")])
            source = client_address(0, number)
            status, _, answer = nginx.request("POST", "/api/images", body, headers, source=source)
            if status != 201:
                raise RuntimeError(f"seeding: {status} {answer[:300]!r}")
            png_url = json.loads(answer)["images"][0]["png_url"].removeprefix(nginx.url)
            urls += [png_url + width for width in WIDTHS]
    with restarted(nodes):
        fetch_all([nginx], urls, args.repeats)
        consistent = sum(decodes(node) for node in nodes) / len(photos)
        times = cached_load(nginx, urls, args.clients, args.duration)
    with restarted(nodes):
        fetch_all(nodes, urls, args.repeats)
        round_robin = sum(decodes(node) for node in nodes) / len(photos)
    return {
        "machine": detect("cpu").describe(),
        "images": len(photos),
        "requests_per_image_per_phase": len(WIDTHS) * args.repeats,
        "decodes_per_image": {"consistent hash (nginx)": consistent, "round-robin": round_robin},
        "cached": {
            "clients": args.clients,
            "seconds": args.duration,
            "requests": len(times),
            "per_s": round(len(times) / args.duration, 1),
            "p50_ms": round(statistics.median(times) * 1000, 1),
            "p99_ms": round(percentile(times, 99) * 1000, 1),
        },
    }


def print_figures(figures: dict) -> None:
    """The table."""
    print(f"machine: {figures['machine']}")
    per_image = figures["requests_per_image_per_phase"]
    print(f"2 nodes behind nginx, {figures['images']} images, {per_image} PNG requests per image")
    print(f"{'routing':<26}{'decodes/image':>14}")
    for phase, value in figures["decodes_per_image"].items():
        print(f"{phase:<26}{value:>14.2f}")
    cached = figures["cached"]
    print(
        f"cached PNGs through nginx, {cached['clients']} clients, {cached['seconds']:g} s: "
        f"{cached['per_s']} req/s, p50 {cached['p50_ms']} ms, p99 {cached['p99_ms']} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
