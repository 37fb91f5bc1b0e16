"""The cold gallery page in a real browser: time to placeholders and to final thumbnails, bytes.

    python -m benchmarks.cold_page [--weights DIR] [--photos DIR] [--count 24] [--shots DIR]

Stores the first `--count` photos of `--photos` (PNG or JPEG, by name; the Kodak set by
default) through the API of a real gunicorn with the real TAESD (effort 0, to keep the seeding
short), then for each of: previews off, previews on — restarts the server (empty render cache,
the settings' defaults otherwise, so the start-up warming of the newest page runs as it does
for a user), opens `/` in Chromium with an empty browser cache and times, from the navigation:
every preview placeholder in view loaded, and every thumbnail in view final. Then a warm page:
a new browser (empty cache) against the warm server. Bytes are the Resource Timing API's
`encodedBodySize` (response bodies as sent, without headers) of the document and of everything
it fetched until its network was quiet (off-screen cards the browser loaded lazily included);
per card, the mean over the cards whose images loaded of their preview's and thumbnail's (the
`srcset` candidate it picked), and per thumbnail the mean of those alone. Prints a table that
names the machine; with `--shots`, saves the previews-on sequence there (placeholders, then
final). A benchmark, not a test: its figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from statistics import fmean

from playwright.sync_api import Browser, Page, Request, Response, sync_playwright

from tests.servers import Gunicorn

from .common import DEFAULT_KODAK, DEFAULT_WEIGHTS, image_paths, machine

START_S = 300
UPLOAD_WAIT_S = 600
"""How long an upload may wait for its encode (`LATENT_GALLERY_UPLOAD_WAIT`): all of it, so
each POST answers 201 once stored."""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 600_000
# A function, not an expression: Playwright evals a bare expression, which the page's CSP
# refuses. Once the page's layout is final (the stylesheet applied, the deferred scripts run)
# and every image matching the selector that is in view has loaded: how many there are, else
# null. (A render refused with 503 is asked for again by the page: it counts once loaded.)
ALL_IN_VIEW_LOADED = """(selector) => {
  const [navigation] = performance.getEntriesByType("navigation");
  if (!navigation || !navigation.domContentLoadedEventEnd) return null;
  if (getComputedStyle(document.getElementById("grid")).display !== "grid") return null;
  const inView = [...document.querySelectorAll(selector)].filter((img) => {
    const r = img.getBoundingClientRect();
    return r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth;
  });
  if (!inView.length || !inView.every((img) => img.complete && img.naturalWidth)) return null;
  return inView.length;
}"""
# The bytes of every response body the page received (its document's and its resources'),
# and for each selector, those of each element it matches whose images (the element itself,
# or the images in it) have all loaded: of the `srcset` candidate each shows.
DOWNLOADED = """(selectors) => {
  const entries = [...performance.getEntriesByType("navigation"),
                   ...performance.getEntriesByType("resource")];
  const sizes = new Map(entries.map((entry) => [entry.name, entry.encodedBodySize]));
  const images = (element) =>
    element.matches("img") ? [element] : [...element.querySelectorAll("img")];
  const loaded = (img) => img.complete && img.naturalWidth;
  const shown = selectors.map((selector) => [...document.querySelectorAll(selector)]
    .map(images)
    .filter((imgs) => imgs.length && imgs.every(loaded))
    .map((imgs) => imgs.reduce((sum, img) => sum + (sizes.get(img.currentSrc) ?? 0), 0)));
  return {page: entries.reduce((sum, entry) => sum + entry.encodedBodySize, 0), shown};
}"""
CARDS = "#grid .card"
FINALS = "#grid .card img:not(.preview)"
PLACEHOLDERS = "#grid .card img.preview"
QUIET_S = 0.5
"""The network is quiet once no request has been in flight for this long..."""
SETTLE_S = 120
"""...or after this long, whatever is still in flight."""


def server_env(weights: str | Path) -> dict[str, str]:
    """The settings a benchmark's server needs here (the weights, on the CPU; upload limits and
    wait that let one client store every photo in turn); the settings' defaults otherwise."""
    return {
        "LATENT_GALLERY_ENCODER": str(weights),
        "LATENT_GALLERY_DECODER": str(weights),
        "LATENT_GALLERY_DEVICE": "cpu",
        "LATENT_GALLERY_LOG_LEVEL": "warning",
        "LATENT_GALLERY_UPLOAD_RATE": "100000/minute",
        "LATENT_GALLERY_UPLOAD_MEGAPIXELS": "100000/minute",
        "LATENT_GALLERY_UPLOAD_WAIT": str(UPLOAD_WAIT_S),
    }


@contextmanager
def serving(data: Path, log: Path, env: Mapping[str, str]) -> Iterator[Gunicorn]:
    """A gunicorn on `data` with the settings `env`, started (models loaded), then stopped."""
    server = Gunicorn(data, log, env).start(timeout=START_S)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def chromium() -> Iterator[Browser]:
    """Chromium, headless."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Traffic:
    """A page's requests: how many are in flight, and every answer's status and URL."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.in_flight = 0
        self.answers: list[tuple[int, str]] = []
        page.on("request", self._sent)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)
        page.on("response", self._answered)

    @property
    def refused(self) -> int:
        """How many answers were 503 (the page asks for those renders again)."""
        return sum(status == 503 for status, _ in self.answers)

    def downloaded(self, *selectors: str) -> tuple[int, list[list[int]]]:
        """Once the network is quiet (`QUIET_S`, `SETTLE_S`): the bytes of every response body
        the page received, and per selector those of each element it matches whose images
        have loaded (the element itself, or the images in it)."""
        quiet, deadline = 0.0, time.monotonic() + SETTLE_S
        while quiet < QUIET_S and time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
            quiet = 0.0 if self.in_flight else quiet + 0.1
        sizes = self.page.evaluate(DOWNLOADED, selectors)
        return sizes["page"], sizes["shown"]

    def _sent(self, _request: Request) -> None:
        self.in_flight += 1

    def _ended(self, _request: Request) -> None:
        self.in_flight -= 1

    def _answered(self, response: Response) -> None:
        self.answers.append((response.status, response.url))


@contextmanager
def fresh_page(browser: Browser) -> Iterator[tuple[Page, Traffic]]:
    """A page in a new browser context (empty cache) of `VIEWPORT`, and its traffic."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        yield page, Traffic(page)
    finally:
        context.close()


def seconds_until(page: Page, selector: str, start: float) -> tuple[float, int]:
    """Seconds from `start` until every `selector` image in view has loaded, and their count."""
    done = page.wait_for_function(ALL_IN_VIEW_LOADED, arg=selector, polling=50, timeout=TIMEOUT_MS)
    return time.perf_counter() - start, done.json_value()


def open_gallery(
    browser: Browser, url: str, previews: bool, shots: Path | None
) -> dict[str, float]:
    """Open `url` in a fresh browser context; the times to placeholders and to finals, how
    many thumbnails were in view, how many answers were 503 (then asked for again), the bytes
    the page downloaded, and the mean bytes of a card (its preview and thumbnail) and of a
    thumbnail."""
    with fresh_page(browser) as (page, traffic):
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        times = {}
        if previews:
            times["placeholders"], _ = seconds_until(page, PLACEHOLDERS, start)
            if shots:
                page.screenshot(path=shots / "cold-1-placeholders.png")
        times["final"], finals = seconds_until(page, FINALS, start)
        if previews and shots:
            page.screenshot(path=shots / "cold-2-final.png")
        page_bytes, (cards, thumbnails) = traffic.downloaded(CARDS, FINALS)
        return {
            **times,
            "in view": finals,
            "refused": traffic.refused,
            "bytes": page_bytes,
            "card bytes": fmean(cards),
            "thumbnail bytes": fmean(thumbnails),
        }


def seed(server: Gunicorn, photos: list[Path]) -> list[tuple[dict, float]]:
    """Upload each photo in turn (oldest first): the stored image's JSON, and the seconds from
    its POST to the 201 that answered it."""
    stored = []
    for path in photos:
        content = path.read_bytes()
        start = time.perf_counter()
        status, answer = server.upload(content, path.name, timeout=UPLOAD_WAIT_S + 60)
        seconds = time.perf_counter() - start
        if status != 201:
            raise SystemExit(f"uploading {path.name}: {status} {answer}")
        stored.append((answer["images"][0], seconds))
    return stored


def main() -> None:
    """Seed, then time the cold page without and with previews, then a warm page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--photos", "--kodak", type=Path, default=DEFAULT_KODAK)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--shots", type=Path, help="save the screenshot sequence here")
    parser.add_argument(
        "--decode-timeout", type=float, default=30.0, help="LATENT_GALLERY_DECODE_TIMEOUT"
    )
    args = parser.parse_args()
    photos = image_paths(args.photos, args.count)
    env = {**server_env(args.weights), "LATENT_GALLERY_DECODE_TIMEOUT": str(args.decode_timeout)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cold-page-") as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "gunicorn.log"
        seeding = {**env, "LATENT_GALLERY_EFFORT": "0", "LATENT_GALLERY_WARM_ON_START": "0"}
        with serving(data, log, seeding) as server:
            seed(server, photos)
        with chromium() as browser:
            for previews in (False, True):
                flag = {"LATENT_GALLERY_PREVIEWS": "1" if previews else "0"}
                with serving(data, log, {**env, **flag}) as server:
                    cold = open_gallery(browser, server.url + "/", previews, args.shots)
                    rows.append((f"cold, previews {'on' if previews else 'off'}", cold))
                    if previews:
                        rows.append(("warm", open_gallery(browser, server.url + "/", True, None)))
    print(f"machine: {machine()}; {os.cpu_count()} CPUs online")
    viewport = f"{VIEWPORT['width']}x{VIEWPORT['height']}"
    print(f"{len(photos)} photos of {args.photos} stored, viewport {viewport}")
    print("bytes: response bodies (encodedBodySize), KB = 1000 bytes")
    print(
        f"{'page':<20} {'in view':>7} {'placeholders s':>15} {'final s':>8} {'503s':>6} "
        f"{'page KB':>8} {'KB/card':>8} {'KB/thumbnail':>12}"
    )
    for name, times in rows:
        shown = f"{times['placeholders']:.2f}" if "placeholders" in times else "—"
        kilobytes = " ".join(
            f"{times[key] / 1000:>{width}.1f}"
            for key, width in (("bytes", 8), ("card bytes", 8), ("thumbnail bytes", 12))
        )
        print(
            f"{name:<20} {times['in view']:>7} {shown:>15} {times['final']:>8.2f} "
            f"{times['refused']:>6} {kilobytes}"
        )


if __name__ == "__main__":
    main()
