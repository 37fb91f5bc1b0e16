"""One client trying to stall the site: the attack scenarios, against a real gunicorn on 127.0.0.1.

    python -m benchmarks.abuse --weights DIR --kodak DIR [--json FILE]

Seeds the gallery with small Kodak crops (512x256, effort 0, on a seeding server with no
upload budget), restarts the server at the default limits with `LATENT_GALLERY_WARM_ON_START=0`
(every seeded render is uncached), warms the decoders on two spare images, then runs:

- cross-site form: `POST /upload` with `Origin: https://evil.example`: refused (403);
- render burst: one client asks for 40 uncached renders at once (full size and `?w=256`, each
  of another image) and asks again for each 503 after its `Retry-After`, as the gallery page
  does; meanwhile `/healthz` and `/` are timed back to back from another address, and another
  visitor asks for uncached renders (one at a time, 3 in all) while `latent_gallery_decodes_total`
  counts the decodes between each request and its answer (its own one included);
- file flood: one request of 40 files with `?wait=0`, then three such requests at once from
  three addresses; accepted and refused files, and `latent_gallery_encode_queue_depth` right
  after (past the `LATENT_GALLERY_ENCODE_QUEUE` bound: goal 0);
- huge upload: a 6000x6000 solid-colour PNG (generated in memory) is encoded and warmed while a
  visitor asks for an uncached render of a small image every `--render-interval` seconds.

Clients are told apart by their loopback source address (127.0.0.x: no proxy, nothing trusted).
Reports, per scenario, the figures against the goals and the worker's peak RSS in it
(`/proc/<pid>/status` VmHWM, reset at the scenario's start through `/proc/<pid>/clear_refs`),
and names the machine as the server's encode plan saw it. The server inherits this process's
environment: `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` in front forces the AVX2 class.
Exits 1 if a goal fails. A benchmark, not a test: its latencies depend on the machine's load.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from codec.hardware import Machine, detect
from tests.servers import Gunicorn, multipart

from .common import DEFAULT_KODAK, DEFAULT_WEIGHTS
from .load import proc_status, wait_quiet

LATENCY_GOAL_S = 1.0
DECODES_AHEAD_GOAL = 2
RSS_GOAL_MB = 1536  # 1.5 GB, in the MB (MiB) of `proc_status`
ENCODE_QUEUE = 16  # LATENT_GALLERY_ENCODE_QUEUE's default
CROP = (512, 256)  # ?w=256 decodes straight to the thumbnail (2 x 256 <= 512)
HUGE_SIDE = 6000
BURST = 40
FLOOD_FILES = 40
ATTACKER, VISITOR, UPLOADER, FLOODER, STRANGER = (f"127.0.0.{n}" for n in (2, 3, 4, 5, 6))
CO_FLOODERS = ("127.0.0.7", "127.0.0.8", "127.0.0.9")
EVIL = "https://evil.example"


@dataclass
class Row:
    """One figure of the report: the scenario, what is measured, its value, the goal."""

    scenario: str
    figure: str
    value: str
    goal: str = ""
    ok: bool | None = None


@dataclass
class Timed:
    """One request's answer and its seconds, `at` seconds into its scenario."""

    status: int
    seconds: float
    at: float = 0.0


class Abuse:
    """The scenarios against one started server; each appends its rows to `rows`."""

    def __init__(self, server: Gunicorn, images: list[str], crops: list[bytes]) -> None:
        self.server = server
        self.pid = server.worker_pid()
        self.images = list(images)  # uncached renders, each used once
        self.crops = crops
        self.rows: list[Row] = []
        self.running = ""
        self.details: dict[str, Any] = {}

    def take(self, count: int) -> list[str]:
        """`count` images not rendered yet."""
        if len(self.images) < count:
            raise SystemExit(f"seed more images: {count} needed, {len(self.images)} left")
        taken, self.images = self.images[:count], self.images[count:]
        return taken

    def get(self, path: str, source: str | None = None) -> Timed:
        """GET `path` from `source`: its status and seconds (status 0: no answer)."""
        start = time.perf_counter()
        try:
            status = self.server.request("GET", path, source=source)[0]
        except OSError:
            status = 0
        return Timed(status, time.perf_counter() - start)

    def metric(self, name: str) -> float:
        """A counter's or gauge's value from the server's `/metrics`."""
        return metric(self.server, name)

    def add(self, figure: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        """A row of the scenario running now."""
        self.rows.append(Row(self.running, figure, value, goal, ok))

    @contextmanager
    def scenario(self, name: str) -> Iterator[None]:
        """Run the block as scenario `name` (rows `add`ed to it), let the server settle, add the
        worker's peak RSS from the block's start (VmHWM reset to VmRSS there)."""
        print(f"{time.strftime('%H:%M:%S')} {name}", file=sys.stderr, flush=True)
        self.running = name
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        start = proc_status(self.pid)["rss_mb"]
        yield
        settle(self.server)
        peak = proc_status(self.pid)["peak_rss_mb"]
        self.add(
            "worker peak RSS MB (RSS at start)",
            f"{peak} ({start})",
            f"<= {RSS_GOAL_MB}",
            peak <= RSS_GOAL_MB,
        )

    def cross_site(self) -> None:
        """A form upload posted from another site."""
        with self.scenario("cross-site form"):
            body, headers = multipart([(self.crops[0], "crop.png")])
            headers |= {"Origin": EVIL}
            status = self.server.request("POST", "/upload", body, headers, source=STRANGER)[0]
            depth = self.metric("latent_gallery_encode_queue_depth")
            self.add(f"POST /upload, Origin {EVIL}", str(status), "403", status == 403)
            self.add("encode queue depth after", f"{depth:g}", "0", depth == 0)

    def burst(self, visitors: int) -> None:
        """40 uncached renders from one client, probes and other visitors' renders meanwhile."""
        paths = [
            f"/i/{image}.png" + ("?w=256" if n % 2 else "")
            for n, image in enumerate(self.take(BURST))
        ]
        visits = [f"/i/{image}.png" for image in self.take(visitors)]
        first: list[Timed] = []
        final: list[Timed] = []
        probes: dict[str, list[float]] = {"/healthz": [], "/": []}
        requests: list[int] = []
        seen: list[tuple[int, float, int]] = []
        done = threading.Event()

        def attack(path: str) -> None:
            start, asked = time.perf_counter(), 0
            while True:
                try:
                    status, headers, _ = self.server.request("GET", path, source=ATTACKER)
                except OSError:
                    status, headers = 0, {}
                asked += 1
                if asked == 1:
                    first.append(Timed(status, time.perf_counter() - start))
                if status != 503:
                    break
                time.sleep(float(headers.get("Retry-After", 1)))
            final.append(Timed(status, time.perf_counter() - start))
            requests.append(asked)

        def probe() -> None:
            while not done.is_set():
                for path in probes:
                    probes[path].append(self.get(path).seconds)
                time.sleep(0.05)

        def visit() -> None:
            time.sleep(1.5)  # the attacker's renders hold its wait slots and fill the queue
            for path in visits:
                before = self.metric("latent_gallery_decodes_total")
                answer = self.get(path, VISITOR)
                decodes = self.metric("latent_gallery_decodes_total") - before
                seen.append((answer.status, answer.seconds, round(decodes)))
                time.sleep(1.0)

        with self.scenario(f"render burst ({BURST} at once)"):
            start = time.perf_counter()
            watchers = [threading.Thread(target=probe), threading.Thread(target=visit)]
            attackers = [threading.Thread(target=attack, args=(path,)) for path in paths]
            for thread in attackers + watchers:
                thread.start()
            for thread in attackers:
                thread.join()
            watchers[1].join()
            done.set()
            watchers[0].join()
            seconds = time.perf_counter() - start

            firsts = Counter(answer.status for answer in first)
            finals = Counter(answer.status for answer in final)
            self.add("attacker: first answers", _statuses(firsts))
            self.add(
                "attacker: answers after retrying 503s (Retry-After)",
                f"{_statuses(finals)}, {sum(requests)} requests in {seconds:.1f} s",
            )
            for path, times in probes.items():
                worst, median = max(times), statistics.median(times)
                self.add(
                    f"GET {path} max / median s ({len(times)} probes)",
                    f"{worst:.3f} / {median:.3f}",
                    f"<= {LATENCY_GOAL_S:g}",
                    worst <= LATENCY_GOAL_S,
                )
            for number, (status, latency, decodes) in enumerate(seen, 1):
                ahead = decodes - 1  # its own decode is one of them
                self.add(
                    f"visitor's render {number}: status, s, decodes meanwhile (its own too)",
                    f"{status}, {latency:.2f} s, {decodes}",
                    f"200, <= {DECODES_AHEAD_GOAL} + its own",
                    status == 200 and ahead <= DECODES_AHEAD_GOAL,
                )
            self.details["burst"] = {
                "first": [asdict(t) for t in first],
                "final": [asdict(t) for t in final],
                "probes": probes,
                "visitor": seen,
            }

    def flood(self) -> None:
        """40 files in one request, then three such requests at once from three addresses."""
        files = [(crop, f"f{n}.png") for n, crop in enumerate(self.flood_files())]
        with self.scenario(f"file flood ({FLOOD_FILES} files, ?wait=0)"):
            counts = [self.upload_files(files, FLOODER)]
            depth = self.metric("latent_gallery_encode_queue_depth")
            settle(self.server)
            answers: list[Counter[int]] = []
            threads = [
                threading.Thread(target=lambda a=a: answers.append(self.upload_files(files, a)))
                for a in CO_FLOODERS
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            depth3 = self.metric("latent_gallery_encode_queue_depth")
            counts.append(sum(answers, Counter()))
            for label, count, after in (
                ("1 request", counts[0], depth),
                ("3 at once", counts[1], depth3),
            ):
                accepted = count.pop("accepted", 0)
                past = max(0, round(after) - ENCODE_QUEUE)
                self.add(
                    f"{label}: files accepted / refused (by status)",
                    f"{accepted} / {sum(count.values())} ({_statuses(count)})",
                )
                self.add(
                    f"{label}: encode queue depth right after (bound {ENCODE_QUEUE})",
                    f"{after:g}, {past} past the bound",
                    "0 past",
                    past == 0,
                )

    def flood_files(self) -> list[bytes]:
        """`FLOOD_FILES` distinct small PNGs (256x256 halves of the crops)."""
        files = []
        for crop in self.crops:
            with Image.open(io.BytesIO(crop)) as image:
                for left in (0, 256):
                    files.append(_png(image.crop((left, 0, left + 256, 256))))
        return files[:FLOOD_FILES]

    def upload_files(self, files: list[tuple[bytes, str]], source: str) -> Counter[int | str]:
        """POST the files to `/api/images?wait=0` from `source`: accepted and refused by status."""
        body, headers = multipart(files)
        status, _, data = self.server.request(
            "POST", "/api/images?wait=0", body, headers, source=source
        )
        answer = json.loads(data)
        if status not in (201, 202, 413, 429, 503):
            raise RuntimeError(f"flood: {status} {answer}")
        count = Counter(error["status"] for error in answer.get("errors", []))
        count["accepted"] = len(answer.get("images", [])) + len(answer.get("jobs", []))
        return count

    def huge_upload(self, interval: float, renders: int, warm_s: float) -> None:
        """A 6000x6000 upload encoding and warming while a visitor asks for small renders."""
        huge = _png(Image.new("RGB", (HUGE_SIDE, HUGE_SIDE), (196, 120, 48)))
        spare = self.take(len(self.images))
        seen: list[Timed] = []
        stored: list[float] = []

        def upload() -> None:
            start = time.perf_counter()
            body, headers = multipart([(huge, "huge.png")])
            status, _, data = self.server.request(
                "POST", "/api/images", body, headers, timeout=900, source=UPLOADER
            )
            self.server.stored(status, json.loads(data))
            stored.append(time.perf_counter() - start)

        with self.scenario(f"huge upload ({HUGE_SIDE}x{HUGE_SIDE} PNG)"):
            start = time.perf_counter()
            uploader = threading.Thread(target=upload)
            uploader.start()
            for number, image in enumerate(spare):
                time.sleep(max(0.0, start + (number + 0.5) * interval - time.perf_counter()))
                ended = stored and time.perf_counter() - start > stored[0] + warm_s
                if ended and len(seen) >= renders:
                    break
                answer = self.get(f"/i/{image}.png", VISITOR)
                answer.at = time.perf_counter() - start - answer.seconds
                seen.append(answer)
            uploader.join()
            window = stored[0] + warm_s
            inside = [answer for answer in seen if answer.at < window]
            statuses = Counter(answer.status for answer in inside)
            self.add(f"upload of {len(huge) // 1000} KB: stored after s", f"{stored[0]:.1f}")
            self.add(
                f"small uncached renders asked in its first {window:.0f} s: statuses",
                _statuses(statuses),
                "all 200",
                bool(inside) and set(statuses) == {200},
            )
            self.add(
                "their latencies s (asked at s)",
                ", ".join(f"{a.seconds:.1f} ({a.at:.0f})" for a in inside),
            )
            self.details["huge"] = {"stored_s": stored[0], "renders": [asdict(a) for a in seen]}


def settle(server: Gunicorn, timeout: float = 600) -> None:
    """Wait until no upload is encoding, then until the decode queue is empty (`wait_quiet`)."""
    end = time.monotonic() + timeout
    while metric(server, "latent_gallery_encode_queue_depth"):
        if time.monotonic() > end:
            raise RuntimeError("the encode queue did not drain")
        time.sleep(0.5)
    wait_quiet(server, timeout)


def metric(server: Gunicorn, name: str) -> float:
    """A counter's or gauge's value from `/metrics` (0 if it has none yet)."""
    text = server.request("GET", "/metrics")[2].decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _statuses(count: Counter) -> str:
    """`Counter({200: 6, 503: 34})` -> `"6x200 34x503"`."""
    return " ".join(f"{n}x{status}" for status, n in sorted(count.items())) or "none"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def kodak_crops(kodak: Path, count: int) -> list[bytes]:
    """`count` distinct `CROP`-sized PNG crops of the Kodak photos (corners and middles)."""
    crops = []
    for path in sorted(kodak.glob("*.png")):
        with Image.open(path) as image:
            width, height = image.size
            corners = {
                (x, y)
                for x in (0, width - CROP[0])
                for y in (0, height // 2 - CROP[1] // 2, height - CROP[1])
            }
            for x, y in sorted(corners):
                crops.append(_png(image.crop((x, y, x + CROP[0], y + CROP[1]))))
    if len(crops) < count:
        raise SystemExit(f"{kodak} gives {len(crops)} crops, {count} needed")
    return crops[:count]


def seed(server: Gunicorn, crops: list[bytes]) -> list[str]:
    """Upload each crop; the stored images' ids."""
    ids = []
    for number, crop in enumerate(crops):
        status, answer = server.upload(crop, f"crop{number}.png", timeout=600)
        ids.append(server.stored(status, answer)["id"])
    return ids


def machine_of(server: Gunicorn) -> str:
    """The machine as the server's measured encode plan names it (else as this process sees it)."""
    plan = json.loads(server.request("GET", "/healthz")[2]).get("encode_plan")
    return Machine(**plan["machine"]).describe() if plan else detect("cpu").describe()


def print_report(machine: str, rows: list[Row]) -> None:
    """The rows as a Markdown table, under the machine's name."""
    print(f"machine: {machine}")
    print("| scenario | figure | measured | goal | |")
    print("|---|---|---|---|---|")
    for row in rows:
        verdict = "" if row.ok is None else "PASS" if row.ok else "FAIL"
        print(f"| {row.scenario} | {row.figure} | {row.value} | {row.goal} | {verdict} |")


def main() -> int:
    """Seed, restart at the defaults, run the scenarios, print; 1 if a goal fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--kodak", type=Path, default=DEFAULT_KODAK)
    parser.add_argument("--visitors", type=int, default=3, help="visitor renders in the burst")
    parser.add_argument(
        "--render-interval",
        type=float,
        default=10.0,
        help="seconds between the small renders asked for during the huge upload",
    )
    parser.add_argument("--renders", type=int, default=5, help="of those, at least")
    parser.add_argument("--spare", type=int, default=12, help="images kept for those renders")
    parser.add_argument(
        "--warm-s",
        type=float,
        default=5.0,
        help="seconds after the huge upload is stored counted as its warm-up",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    crops = kodak_crops(args.kodak, 2 + BURST + args.visitors + args.spare)
    models = {
        "LATENT_GALLERY_ENCODER": args.weights,
        "LATENT_GALLERY_DECODER": args.weights,
        "LATENT_GALLERY_LOG_LEVEL": "warning",
    }
    seeding = {
        **models,
        "LATENT_GALLERY_EFFORT": "0",
        "LATENT_GALLERY_UPLOAD_RATE": "100000/minute",
        "LATENT_GALLERY_UPLOAD_WAIT": "600",
        "LATENT_GALLERY_WARM_ON_START": "0",
    }
    with tempfile.TemporaryDirectory(prefix="abuse-") as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "gunicorn.log"
        server = Gunicorn(data, log, seeding).start(timeout=300)
        try:
            ids = seed(server, crops)
        finally:
            server.stop()
        server = Gunicorn(data, log, {**models, "LATENT_GALLERY_WARM_ON_START": "0"})
        server.start(timeout=300)
        try:
            abuse = Abuse(server, ids, crops)
            for image, width in zip(abuse.take(2), ("", "?w=256"), strict=True):
                abuse.get(f"/i/{image}.png{width}")  # each decoder runs once before the timing
            abuse.cross_site()
            abuse.burst(args.visitors)
            abuse.flood()  # its encodes are done before the huge upload starts
            abuse.huge_upload(args.render_interval, args.renders, args.warm_s)
            machine = machine_of(server)
            traceback = "Traceback" in server.logs()
        finally:
            server.stop()
    if traceback:
        abuse.rows.append(Row("all", "unhandled exception in the server log", "yes", "no", False))
    print_report(machine, abuse.rows)
    if args.json:
        figures = {"machine": machine, "rows": [asdict(r) for r in abuse.rows], **abuse.details}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if all(row.ok is not False for row in abuse.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
