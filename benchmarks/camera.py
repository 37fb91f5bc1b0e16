"""Camera-size photos through a real server: store time and bytes, cold renders, cold pages.

    python -m benchmarks.camera [--photos DIR] [--count 4] [--weights DIR] [--out DIR]

Picks `--count` photos of at least 6 MP from `--photos` (by name, the largest always among
them; none is ever upscaled) and runs a real gunicorn with the real TAESD at the settings'
defaults (only the weights, the CPU, and upload limits and wait that let one client store
every photo in turn are set; `benchmarks.cold_page.server_env`):

1. stores each photo in turn through the API: seconds from the POST to its 201, and the bytes
   kept (latent, display latent);
2. restarts with `LATENT_GALLERY_WARM_ON_START=0` (nothing cached, nothing warming) and, one
   image and one request at a time, times the cold 256-px AVIF thumbnail, the display render
   (the image's `display_url`) and the full-size AVIF;
3. restarts at the defaults (start-up warming on) and opens the gallery in Chromium
   (`cold_page.open_gallery`: every card image in view loaded); restarts again and opens the
   largest photo's image page: until `#picture` has loaded a render (not the preview), which
   `srcset` candidate it picked, and the bytes (`cold_page.Traffic.downloaded`; a card's are
   its preview's and thumbnail's). Each page in a fresh browser context (empty cache).

Prints a table per step beside the goals, naming the machine (run with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` for the AVX2 class: gunicorn inherits the
environment), and writes them to `camera-<capability>.csv` in `--out`. A benchmark, not a
test: its figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from PIL import Image
from playwright.sync_api import Browser

from codec.hardware import detect
from tests.servers import Gunicorn, local_path

from .cold_page import (
    TIMEOUT_MS,
    VIEWPORT,
    chromium,
    fresh_page,
    open_gallery,
    seed,
    server_env,
    serving,
)
from .common import DEFAULT_OUT, DEFAULT_PHOTOS, DEFAULT_WEIGHTS, image_paths, machine
from .report import markdown_table

MIN_MEGAPIXELS = 6.0
THUMB_WIDTH = 256
# The image page's picture once it shows a render (not the preview): the URL it shows, else null.
PICTURE_SHOWN = """() => {
  const picture = document.getElementById("picture");
  if (!picture || !picture.complete || !picture.naturalWidth || !picture.currentSrc) return null;
  return picture.currentSrc.includes(".preview.") ? null : picture.currentSrc;
}"""
Table = list[list[str]]


def camera_photos(folder: Path, count: int) -> list[Path]:
    """The first `count` photos of `folder` of at least `MIN_MEGAPIXELS`, by name, the largest
    always among them."""
    pixels = {}
    for path in image_paths(folder):
        with Image.open(path) as image:
            pixels[path] = image.width * image.height
    large = [path for path in pixels if pixels[path] >= MIN_MEGAPIXELS * 1e6]
    if not large:
        raise SystemExit(f"no photo of {MIN_MEGAPIXELS:g} MP or more in {folder}")
    largest = max(large, key=pixels.__getitem__)
    return sorted({*[path for path in large if path != largest][: count - 1], largest})


def render_path(image: dict, width: int | None) -> str:
    """The path of an image's AVIF render `width` px wide (None: full size) under the decoder
    version its URLs name, as pages ask for it."""
    version = parse_qs(urlsplit(image["png_url"]).query).get("v", [None])[0]
    query = {name: value for name, value in (("w", width), ("v", version)) if value is not None}
    return f"/i/{image['id']}.avif?{urlencode(query)}"


def render_name(url: str) -> str:
    """`.../i/<id>.avif?w=1024&v=...` -> `avif w=1024` (`w=full` without `w`)."""
    parts = urlsplit(url)
    width = parse_qs(parts.query).get("w", ["full"])[0]
    return f"{parts.path.rsplit('.', 1)[-1]} w={width}"


def kilobytes(size: float) -> str:
    """Bytes as KB (1000 bytes), one decimal."""
    return f"{size / 1000:.1f}"


def timed_get(server: Gunicorn, path: str) -> list[str]:
    """GET `path` on a fresh connection: the seconds, and the body's KB (its status if not 200)."""
    start = time.perf_counter()
    status, _, body = server.request("GET", path)
    seconds = time.perf_counter() - start
    return [f"{seconds:.2f}", kilobytes(len(body)) if status == 200 else f"HTTP {status}"]


def store_table(images: list[dict], seconds: list[float]) -> Table:
    """Per photo: its size, the seconds its upload took to be stored, and the bytes kept."""
    table = [
        [
            "photo",
            "source MP",
            "stored px",
            "store s (goal ≤ 20)",
            "latent KB",
            "display latent KB",
            "stored KB (goal ≤ 100)",
        ]
    ]
    for image, store_s in zip(images, seconds, strict=True):
        display = image["stored_bytes"] - image["latent_bytes"]
        source_mp = image["source_width"] * image["source_height"] / 1e6
        table.append(
            [
                image["name"],
                f"{source_mp:.1f}",
                f"{image['width']}×{image['height']}",
                f"{store_s:.1f}",
                kilobytes(image["latent_bytes"]),
                kilobytes(display) if display else "—",
                kilobytes(image["stored_bytes"]),
            ]
        )
    return table


def cold_renders(server: Gunicorn, images: list[dict]) -> Table:
    """Per image, one request at a time: its cold thumbnail, display render and full size."""
    table = [
        [
            "photo",
            "thumbnail s (goal ≤ 1)",
            "thumbnail KB",
            "display render",
            "display s",
            "display KB",
            "full s",
            "full KB",
        ]
    ]
    for image in images:
        thumbnail = timed_get(server, render_path(image, THUMB_WIDTH))
        display = timed_get(server, local_path(image["display_url"]))
        full = timed_get(server, render_path(image, None))
        table.append(
            [image["name"], *thumbnail, render_name(image["display_url"]), *display, *full]
        )
    return table


def gallery_table(gallery: dict[str, float]) -> Table:
    """The cold gallery page's row (`cold_page.open_gallery`'s figures)."""
    return [
        [
            "page",
            "in view",
            "placeholders s",
            "thumbnails in view s (goal ≤ 10)",
            "page KB",
            "KB per card (goal ≤ 30)",
            "KB per thumbnail",
            "503s",
        ],
        [
            "gallery",
            str(gallery["in view"]),
            f"{gallery['placeholders']:.2f}",
            f"{gallery['final']:.2f}",
            kilobytes(gallery["bytes"]),
            kilobytes(gallery["card bytes"]),
            kilobytes(gallery["thumbnail bytes"]),
            str(gallery["refused"]),
        ],
    ]


def image_page_table(browser: Browser, url: str, name: str) -> Table:
    """Open an image page at `url` in a fresh browser context: the seconds until `#picture`
    shows a render, which one, its KB and the page's, its 503 answers, and whether the page
    fetched the full-size render."""
    with fresh_page(browser) as (page, traffic):
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        handle = page.wait_for_function(PICTURE_SHOWN, polling=50, timeout=TIMEOUT_MS)
        seconds = time.perf_counter() - start
        shown = handle.json_value()
        page_bytes, [[picture_bytes]] = traffic.downloaded("#picture")
        full = any(render_name(answer) == "avif w=full" for _, answer in traffic.answers)
    return [
        [
            "image page",
            "picture s (goal ≤ 3)",
            "picture",
            "picture KB (goal ≤ 600)",
            "page KB",
            "503s",
            "full size fetched",
        ],
        [
            name,
            f"{seconds:.2f}",
            render_name(shown),
            kilobytes(picture_bytes),
            kilobytes(page_bytes),
            str(traffic.refused),
            "yes" if full else "no",
        ],
    ]


def encode_plan(server: Gunicorn) -> str:
    """The server's encode plan, as `/healthz` has it once an upload measured it (none where
    no upload was refined: `auto` effort is 0 for images over `LATENT_GALLERY_TILE`)."""
    status, _, body = server.request("GET", "/healthz")
    plan = json.loads(body)["encode_plan"] if status == 200 else None
    if plan is None:
        return "none measured (no upload was refined)"
    return (
        f"auto effort {plan['auto_effort']} ({plan['steps']} {plan['search_dtype']} steps, "
        f"search {plan['search']}) on {plan['machine']['capability']}"
    )


def write_csv(path: Path, tables: dict[str, Table]) -> None:
    """Every table's cells as rows of machine, section, row (its first cell), column, value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["machine", "section", "row", "column", "value"])
        for section, (header, *rows) in tables.items():
            for row in rows:
                writer.writerows(
                    [machine(), section, row[0], column, value]
                    for column, value in zip(header[1:], row[1:], strict=True)
                )


def main() -> None:
    """Store the photos, then time their cold renders, then the cold pages."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV folder")
    args = parser.parse_args()
    photos = camera_photos(args.photos, args.count)
    env = server_env(args.weights)
    with tempfile.TemporaryDirectory(prefix="camera-") as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "gunicorn.log"
        with serving(data, log, env) as server:
            stored = seed(server, photos)
            plan = encode_plan(server)
        images = [
            {**image, "name": path.name} for (image, _), path in zip(stored, photos, strict=True)
        ]
        with serving(data, log, {**env, "LATENT_GALLERY_WARM_ON_START": "0"}) as server:
            renders = cold_renders(server, images)
        largest = max(images, key=lambda image: image["source_width"] * image["source_height"])
        with chromium() as browser:
            with serving(data, log, env) as server:
                gallery = open_gallery(browser, server.url + "/", True, None)
            with serving(data, log, env) as server:
                url = f"{server.url}/i/{largest['id']}"
                image_page = image_page_table(browser, url, largest["name"])
    tables = {
        "Store (POST → 201), one photo at a time": store_table(images, [s for _, s in stored]),
        "Cold renders (a restart with LATENT_GALLERY_WARM_ON_START=0), one at a time": renders,
        "Cold gallery (a restart at the defaults)": gallery_table(gallery),
        "Cold image page of the largest photo (another restart at the defaults)": image_page,
    }
    out = args.out / f"camera-{detect('cpu').capability.lower()}.csv"
    write_csv(out, tables)
    print(f"machine: {machine()}; {os.cpu_count()} CPUs online; server encode plan: {plan}")
    print(
        f"{len(photos)} photos of {args.photos} (≥ {MIN_MEGAPIXELS:g} MP, by name, the largest "
        f"included); KB = 1000 bytes; pages: Chromium {VIEWPORT['width']}×{VIEWPORT['height']}, "
        "empty cache, bytes = response bodies (encodedBodySize)"
    )
    for title, table in tables.items():
        print(f"\n{title}\n\n{markdown_table(table)}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
