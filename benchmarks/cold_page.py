"""The cold gallery page in a real browser: time to placeholders, and to final thumbnails.

    python -m benchmarks.cold_page [--weights DIR] [--kodak DIR] [--count 24] [--shots DIR]

Stores `--count` photos through the API of a real gunicorn with the real TAESD (effort 0, to
keep the seeding short), then for each of: previews off, previews on — restarts the server
(empty render cache, the settings' defaults otherwise, so the start-up warming of the newest
page runs as it does for a user), opens `/` in Chromium with an empty browser cache and times,
from the navigation: every preview placeholder in view loaded, and every thumbnail in view
final. Then a warm page: a new browser (empty cache) against the warm server. Prints a table
that names the machine; with `--shots`, saves the previews-on sequence there (placeholders,
then final). A benchmark, not a test: its figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from codec.hardware import detect
from tests.servers import Gunicorn

ROOT = Path(__file__).resolve().parents[1]
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
FINALS = "#grid .card img:not(.preview)"
PLACEHOLDERS = "#grid .card img.preview"


def seconds_until(page: Page, selector: str, start: float) -> tuple[float, int]:
    """Seconds from `start` until every `selector` image in view has loaded, and their count."""
    done = page.wait_for_function(ALL_IN_VIEW_LOADED, arg=selector, polling=50, timeout=TIMEOUT_MS)
    return time.perf_counter() - start, done.json_value()


def open_gallery(browser, url: str, previews: bool, shots: Path | None) -> dict[str, float]:
    """Open `url` in a fresh browser context; the times to placeholders and to finals, how
    many thumbnails were in view, and how many answers were 503 (then asked for again)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    refused = []
    page.on("response", lambda response: response.status == 503 and refused.append(response.url))
    try:
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
        return {**times, "in view": finals, "refused": len(refused)}
    finally:
        context.close()


def seed(server: Gunicorn, photos: list[Path]) -> None:
    """Upload each photo (oldest first), checking each is stored."""
    for path in photos:
        status, answer = server.upload(path.read_bytes(), path.name, timeout=600)
        if status != 201:
            raise SystemExit(f"uploading {path.name}: {status} {answer}")


def main() -> None:
    """Seed, then time the cold page without and with previews, then a warm page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(ROOT.parent / "shared" / "weights" / "taesd"))
    parser.add_argument("--kodak", type=Path, default=ROOT.parent / "shared/images/kodak")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--shots", type=Path, help="save the screenshot sequence here")
    parser.add_argument(
        "--decode-timeout", type=float, default=30.0, help="LATENT_GALLERY_DECODE_TIMEOUT"
    )
    args = parser.parse_args()
    photos = sorted(args.kodak.glob("*.png"))[: args.count]
    env = {
        "LATENT_GALLERY_ENCODER": args.weights,
        "LATENT_GALLERY_DECODER": args.weights,
        "LATENT_GALLERY_DEVICE": "cpu",
        "LATENT_GALLERY_LOG_LEVEL": "warning",
        "LATENT_GALLERY_UPLOAD_RATE": "100000/minute",
        "LATENT_GALLERY_DECODE_TIMEOUT": str(args.decode_timeout),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="cold-page-") as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "gunicorn.log"
        seeding = {**env, "LATENT_GALLERY_EFFORT": "0", "LATENT_GALLERY_UPLOAD_WAIT": "600",
                   "LATENT_GALLERY_WARM_ON_START": "0"}  # fmt: skip
        server = Gunicorn(data, log, seeding).start(timeout=300)
        try:
            seed(server, photos)
        finally:
            server.stop()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for previews in (False, True):
                flag = {"LATENT_GALLERY_PREVIEWS": "1" if previews else "0"}
                server = Gunicorn(data, log, {**env, **flag}).start(timeout=300)
                try:
                    cold = open_gallery(browser, server.url + "/", previews, args.shots)
                    rows.append((f"cold, previews {'on' if previews else 'off'}", cold))
                    if previews:
                        rows.append(("warm", open_gallery(browser, server.url + "/", True, None)))
                finally:
                    server.stop()
            browser.close()
    print(f"machine: {detect('cpu').describe()}; {os.cpu_count()} CPUs online")
    print(f"{len(photos)} photos stored, viewport {VIEWPORT['width']}x{VIEWPORT['height']}")
    print(f"{'page':<20} {'in view':>7} {'placeholders s':>15} {'final s':>8} {'503s':>6}")
    for name, times in rows:
        shown = f"{times['placeholders']:.2f}" if "placeholders" in times else "—"
        print(
            f"{name:<20} {times['in view']:>7} {shown:>15} {times['final']:>8.2f} "
            f"{times['refused']:>6}"
        )


if __name__ == "__main__":
    main()
