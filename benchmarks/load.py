"""Load test of a real gunicorn on 127.0.0.1: gallery pages, cached and uncached PNGs, uploads.

    python -m benchmarks.load --weights DIR --kodak DIR [--duration 90] [--clients 8]

Seeds the gallery with Kodak photos, restarts the server (empty render cache: every seeded
render is a real "uncached" decode the first time), runs `--warmup` seconds of the same load
(thread pools reach their size), then `--clients` threads for `--duration` seconds or
`--max-requests` requests, whichever comes first; the server is stopped at the end.
Loopback only. Reports requests/s and p50/p99 latency per kind and the worker's peak RSS,
and checks: no 5xx but deliberate 503s (queue full or deadline), peak RSS under model +
cache limit + `--margin-mb`, and no more threads or file descriptors in the worker after the
run than before it. Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from tests.servers import Gunicorn, multipart

KINDS = ("page", "png_cached", "png_uncached", "upload")
WIDTHS = (None, 256, 512)
KEEPALIVE_S = 5  # gunicorn.conf.py: idle keep-alive connections close after this


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in MB, open file descriptors and threads of a process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) // 1024,
        "peak_rss_mb": int(fields["VmHWM"].split()[0]) // 1024,
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "threads": len(list(Path(f"/proc/{pid}/task").iterdir())),
    }


def wait_quiet(server: Gunicorn, timeout: float = 600) -> None:
    """Wait until the decode queue is empty and idle keep-alive connections have closed."""
    end = time.monotonic() + timeout
    while json.loads(server.request("GET", "/healthz")[2])["queue_depth"]:
        if time.monotonic() > end:
            raise RuntimeError("the decode queue did not drain")
        time.sleep(0.5)
    time.sleep(KEEPALIVE_S + 3)  # renders in the PNG pool finish; keep-alive sockets close


class Load:
    """The client side: picks a kind, sends it, records (kind, status, seconds)."""

    def __init__(self, server: Gunicorn, ids: list[str], photos: list[bytes], seed: int) -> None:
        self.server = server
        self.ids = ids
        self.photos = photos
        self.uncached = [(i, w) for i in ids for w in WIDTHS]
        random.Random(seed).shuffle(self.uncached)
        self.served: list[tuple[str, int | None]] = []
        self.results: list[tuple[str, int, float]] = []
        self.lock = threading.Lock()

    def pick(self, rng: random.Random) -> tuple[str, str, bytes | None, dict]:
        """The next request: kind, path, body, headers."""
        roll = rng.random()
        with self.lock:
            if roll < 0.08 and self.uncached:
                key, kind = self.uncached.pop(), "png_uncached"
            elif roll < 0.12:
                kind = "upload"
            elif roll < 0.40 or not self.served:
                kind = "page"
            else:
                key, kind = rng.choice(self.served), "png_cached"
        if kind == "upload":
            body, headers = multipart([(rng.choice(self.photos), "kodak.png")])
            return kind, "/api/images", body, headers
        if kind == "page":
            return kind, rng.choice(["/", "/api/images?limit=24"]), None, {}
        image_id, width = key
        return kind, f"/i/{image_id}.png" + (f"?w={width}" if width else ""), None, {}

    def client(self, seed: int, end: float, budget: list[int]) -> None:
        """One client thread: requests until the time or the request budget runs out."""
        rng = random.Random(seed)
        while time.monotonic() < end:
            with self.lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            kind, path, body, headers = self.pick(rng)
            method = "POST" if body else "GET"
            start = time.perf_counter()
            try:
                status = self.server.request(method, path, body, headers, timeout=120)[0]
            except OSError:
                status = 0
            elapsed = time.perf_counter() - start
            with self.lock:
                self.results.append((kind, status, elapsed))
                if kind == "png_uncached" and status == 200:
                    self.served.append(_key(path))
                elif kind == "png_uncached":
                    self.uncached.append(_key(path))  # refused: still uncached, try later


def _key(path: str) -> tuple[str, int | None]:
    image_id, _, query = path.removeprefix("/i/").partition(".png")
    return image_id, int(query.removeprefix("?w=")) if query else None


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def report(results: list[tuple[str, int, float]], seconds: float) -> dict[str, dict]:
    """Per kind and overall: count, requests/s, p50/p99 ms, status counts."""
    by_kind: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for kind, status, elapsed in results:
        by_kind[kind].append((status, elapsed))
        by_kind["all"].append((status, elapsed))
    table = {}
    for kind in (*KINDS, "all"):
        rows = by_kind.get(kind, [])
        if not rows:
            continue
        times = [elapsed for _, elapsed in rows]
        table[kind] = {
            "count": len(rows),
            "per_s": round(len(rows) / seconds, 2),
            "p50_ms": round(statistics.median(times) * 1000, 1),
            "p99_ms": round(percentile(times, 99) * 1000, 1),
            "statuses": dict(sorted(Counter(status for status, _ in rows).items())),
        }
    return table


def main() -> int:
    """Seed, restart, warm up, load, check; print the report (and write it as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="../shared/weights/taesd")
    parser.add_argument("--kodak", type=Path, default=Path("../shared/images/kodak"))
    parser.add_argument("--seed-images", type=int, default=12)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before")
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--cache-mb", type=int, default=64)
    margin = (
        "working memory allowed beyond model + cache: one decode pass (webapp.render.batcher."
        "BATCH_PIXELS, ~2 GB with TAESD fp32) + one upload encode (~0.4 GB)"
    )
    parser.add_argument("--margin-mb", type=int, default=2560, help=margin)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()

    photos = [path.read_bytes() for path in sorted(args.kodak.glob("*.png"))]
    env = {
        "LATENT_GALLERY_ENCODER": args.weights,
        "LATENT_GALLERY_DECODER": args.weights,
        "LATENT_GALLERY_CACHE_MB": str(args.cache_mb),
        "LATENT_GALLERY_UPLOAD_RATE": "100000/minute",
        "LATENT_GALLERY_LOG_LEVEL": "warning",
        "LATENT_GALLERY_WARM_ON_START": "0",  # seeded renders stay uncached after the restart
    }
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "gunicorn.log"
        server = Gunicorn(data, log, env).start()
        try:
            ids = []
            for photo in photos[: args.seed_images]:
                body, headers = multipart([(photo, "seed.png")])
                status, _, answer = server.request("POST", "/api/images", body, headers)
                ids.append(server.stored(status, json.loads(answer))["id"])
        finally:
            server.stop()
        server = Gunicorn(data, log, env).start()  # empty cache: seeded renders are uncached
        try:
            return run(args, server, ids, photos)
        finally:
            server.stop()


def drive(load: Load, clients: int, duration: float, max_requests: int) -> float:
    """Run `clients` client threads for `duration` seconds or `max_requests`; seconds taken."""
    start = time.monotonic()
    end, budget = start + duration, [max_requests]
    threads = [
        threading.Thread(target=load.client, args=(seed, end, budget)) for seed in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - start


def run(args: argparse.Namespace, server: Gunicorn, ids: list[str], photos: list[bytes]) -> int:
    """Warm up, take the baselines, run the load, check and print."""
    pid = server.worker_pid()
    body, headers = multipart([(photos[-1], "warm.png")])  # encoder, decoder, PNG pool
    status, _, answer = server.request("POST", "/api/images", body, headers)
    server.stored(status, json.loads(answer))
    wait_quiet(server)
    model = proc_status(pid)  # models loaded, one upload and its renders done
    load = Load(server, ids, photos, seed=1)
    drive(load, args.clients, args.warmup, args.max_requests)  # thread pools reach their size
    wait_quiet(server)
    before = proc_status(pid)
    load.results.clear()
    seconds = drive(load, args.clients, args.duration, args.max_requests)
    during = proc_status(pid)
    wait_quiet(server)
    after = proc_status(pid)

    table = report(load.results, seconds)
    server_errors = {
        status: n
        for status, n in table["all"]["statuses"].items()
        if status == 0 or (status >= 500 and status != 503)
    }
    limit_mb = model["rss_mb"] + args.cache_mb + args.margin_mb
    checks = {
        "no 5xx but deliberate 503s, no dropped connections": not server_errors,
        f"peak RSS {during['peak_rss_mb']} MB <= model {model['rss_mb']} + cache "
        f"{args.cache_mb} + margin {args.margin_mb} = {limit_mb} MB": during["peak_rss_mb"]
        <= limit_mb,
        f"threads {before['threads']} -> {after['threads']}": after["threads"] <= before["threads"],
        f"fds {before['fds']} -> {after['fds']}": after["fds"] <= before["fds"],
        "no unhandled exception (traceback) in the server log": "Traceback" not in server.logs(),
    }
    print(f"{args.clients} clients, {seconds:.0f} s, {len(load.results)} requests")
    print(f"{'kind':<13}{'count':>7}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}  statuses")
    for kind, row in table.items():
        print(f"{kind:<13}{row['count']:>7}{row['per_s']:>8}{row['p50_ms']:>9}"
              f"{row['p99_ms']:>9}  {row['statuses']}")  # fmt: skip
    print(
        f"worker RSS: {model['rss_mb']} MB with the models loaded, peak {during['peak_rss_mb']} MB"
    )
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        summary = {
            "seconds": seconds, "clients": args.clients, "kinds": table,
            "model": model, "before": before, "during": during, "after": after, "checks": checks,
        }  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
