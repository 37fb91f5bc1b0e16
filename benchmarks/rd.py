"""Rate-distortion benchmark on Kodak: every registered codec method, the float-latent ceiling,
and Pillow's JPEG, WebP, AVIF and JPEG XL at matched file sizes.

    python -m benchmarks.rd [--kodak DIR] [--weights DIR] [--images N] [--quick] [--out DIR]

A full run (all images, not --quick) writes docs/rd.png and docs/BENCHMARKS.md; other runs
write them under --out. Latents are encoded once and cached under --out/latents.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features
from tqdm import tqdm

from codec import Codec
from codec.images import tensor_to_image
from codec.measures import bits_per_pixel
from codec.methods import get_method, method_names
from codec.settings import DEFAULT_METHOD

from . import report, standard
from .bdrate import MIN_SHARED
from .common import (
    DEFAULT_KODAK,
    DEFAULT_OUT,
    DEFAULT_WEIGHTS,
    DOCS,
    ROOT,
    Photo,
    corrected_photo,
    image_paths,
    load_photo,
    machine,
    make_codec,
    uncorrected,
)
from .cvvdp import DISPLAY
from .quality import measure

METHOD_GRID = (0.05, 0.08, 0.12, 0.16, 0.22, 0.3)  # bpp targets for the codec's methods
FORMAT_GRID = (0.06, 0.1, 0.16, 0.22, 0.3, 0.45)  # bpp targets for Pillow's codecs
QUICK_GRID = (0.08, 0.15, 0.3)
PROBE_QUALITIES = (1, 3, 5, 8, 12, 16, 20, 25, 30, 35, 40, 45, 50, 55, 63, 70, 75, 80, 88, 95, 100)
PROBE_IMAGES = 4
MAX_MISS = 0.25  # drop a target whose mean rate misses it by more than this fraction
ANCHORS = ("palette", "JPEG", "WebP", "AVIF", "JPEG XL")  # BD-rates are against each of these


HAND_WRITTEN = "\n<!-- Hand-written below this line: benchmarks.rd keeps it. -->\n"
Pending = tuple[dict, Image.Image, Image.Image]
"""A result row without its quality metrics, the reference image and the decoded image."""


def _pending(method: str, setting: str, photo: Photo, quality: float, n_bytes: float,
             decoded: Image.Image, encode_s: float, decode_s: float) -> Pending:  # fmt: skip
    bpp = bits_per_pixel(n_bytes, *photo.image.size) if math.isfinite(n_bytes) else math.nan
    row = {
        "method": method, "setting": setting, "image": photo.name, "quality": quality,
        "bytes": n_bytes, "bpp": bpp, "encode_s": encode_s, "decode_s": decode_s,
        "machine": machine(),
    }  # fmt: skip
    return row, photo.image, decoded


def _one_thread() -> None:
    torch.set_num_threads(1)


def score(pending: Sequence[Pending], jobs: int) -> list[dict]:
    """The rows with PSNR, MS-SSIM, SSIMULACRA 2 and ColorVideoVDP added, in `jobs` processes."""
    refs, decoded = [p[1] for p in pending], [p[2] for p in pending]
    with ProcessPoolExecutor(jobs, initializer=_one_thread) if jobs > 1 else nullcontext() as pool:
        results = (pool.map if pool else map)(measure, refs, decoded)
        bar = tqdm(results, total=len(pending), desc="metrics", leave=False)
        return [{**p[0], **m} for p, m in zip(pending, bar, strict=True)]


def ceiling_rows(codec: Codec, photos: Sequence[Photo]) -> list[Pending]:
    """The float-latent round trip: the unquantized latent decoded (no file, no rate)."""
    rows = []
    for photo in tqdm(photos, desc="float latent", leave=False):
        start = time.perf_counter()
        pixels = codec.decode_latents(torch.from_numpy(photo.latent)[None])
        w, h = photo.image.size
        decoded = tensor_to_image(pixels[0, :, :h, :w])
        seconds = time.perf_counter() - start
        rows.append(_pending(report.CEILING, "round trip", photo, math.nan, math.nan, decoded,
                         photo.latent_s, seconds))  # fmt: skip
    return rows


def pick_qualities(
    codec: Codec, method: str, photos: Sequence[Photo], grid: Sequence[float]
) -> list[int]:
    """Qualities of `method` whose mean rate on a few images is nearest each grid rate.

    Coding only (effort 0, no decode). Targets the method cannot reach within `MAX_MISS` are
    dropped, qualities giving the same rate count once, and the default quality is always
    included.
    """
    default = get_method(method).default_quality
    probes = photos[:PROBE_IMAGES]
    rate = {}
    for quality in sorted({*PROBE_QUALITIES, default}):
        rate[quality] = float(np.mean([
            bits_per_pixel(len(codec.compress(p.image, latent=p.latent, method=method,
                                              quality=quality, effort=0).data), *p.image.size)
            for p in probes
        ]))  # fmt: skip
    chosen = {default}
    for target in grid:
        quality = min(rate, key=lambda q: (abs(rate[q] - target), -q))
        if abs(rate[quality] / target - 1) <= MAX_MISS:
            chosen.add(quality)
    by_rate = {round(rate[q], 5): q for q in sorted(chosen)}  # the highest quality per rate
    return sorted(by_rate.values(), reverse=True)


def method_rows(codec: Codec, method: str, qualities: Sequence[int], photos: Sequence[Photo],
                label: str | None = None, effort: int | str = 0) -> list[Pending]:  # fmt: skip
    """A codec method at each quality: encode = `latent_of` (cached time) + `compress` of that
    latent (refinement at `effort`, then coding); decode whole.

    The rows are named `label` (default: the method's name).
    """
    rows = []
    for quality in qualities:
        for photo in tqdm(photos, desc=f"{label or method} q={quality}", leave=False):
            start = time.perf_counter()
            data = codec.compress(photo.image, latent=photo.latent, method=method,
                                  quality=quality, effort=effort).data  # fmt: skip
            pack_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = codec.decompress(data)
            decode_s = time.perf_counter() - start
            rows.append(_pending(label or method, f"q={quality}", photo, quality, len(data),
                                 decoded, photo.latent_s + pack_s, decode_s))  # fmt: skip
    return rows


def format_rows(
    fmt: standard.Format, grid: Sequence[float], photos: Sequence[Photo], jobs: int
) -> list[Pending]:
    """A Pillow codec at each reachable grid rate, its quality searched per image.

    The search runs in `jobs` processes; the chosen encoding is then timed again alone.
    """
    targets = [[round(t * p.image.width * p.image.height / 8) for t in grid] for p in photos]
    images = [p.image for p in photos]
    with ProcessPoolExecutor(jobs) if jobs > 1 else nullcontext() as pool:
        results = (pool.map if pool else map)(
            standard.matched_sizes, images, [fmt] * len(photos), targets
        )
        found = list(tqdm(results, total=len(photos), desc=f"{fmt.name} size search", leave=False))
    rows, seen = [], set()
    for index, target in enumerate(grid):
        chosen = [encodings[index] for encodings in found]
        qualities = tuple(e.quality for e in chosen)
        mean_bpp = np.mean([bits_per_pixel(len(e.data), *p.image.size)
                            for e, p in zip(chosen, photos, strict=True)])  # fmt: skip
        if qualities in seen or abs(mean_bpp / target - 1) > MAX_MISS:
            continue
        seen.add(qualities)
        for quality, photo in zip(qualities, tqdm(photos, desc=f"{fmt.name} {target}", leave=False),
                                  strict=True):  # fmt: skip
            encoded = standard.encode(photo.image, fmt, quality)
            start = time.perf_counter()
            decoded = standard.decode(encoded.data)
            decode_s = time.perf_counter() - start
            setting, n_bytes = f"~{target} bpp", len(encoded.data)
            rows.append(_pending(fmt.name, setting, photo, quality, n_bytes, decoded,
                                 encoded.seconds, decode_s))  # fmt: skip
    return rows


def _code_version() -> str:
    """The commit measured (from git, else `LATENT_GALLERY_COMMIT`), flagging codec/ changes."""
    if not (ROOT / ".git").exists():
        return os.environ.get("LATENT_GALLERY_COMMIT", "unknown")
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return os.environ.get("LATENT_GALLERY_COMMIT", "unknown")
    dirty = subprocess.run([*git, "status", "--porcelain", "codec"], capture_output=True, text=True)
    return head.stdout.strip() + (" + uncommitted codec/ changes" if dirty.stdout.strip() else "")


def environment() -> str:
    """Versions and machine the numbers were measured with, as markdown bullets."""
    libs = {name: features.version(name) for name in ("jpg", "webp", "avif")}
    packages = ("pillow", "pillow-jxl-plugin", "torch", "pytorch-msssim", "ssimulacra2", "cvvdp")
    return "\n".join([
        f"- latent-gallery commit {_code_version()}",
        f"- {machine()}; {platform.platform()}, Python {platform.python_version()}",
        "- " + ", ".join(f"{p} {version(p)}" for p in packages),
        "- Pillow codecs: " + ", ".join(f"{k} {v}" for k, v in libs.items()),
    ])  # fmt: skip


def bd_sections(bd: dict[str, list[list[str]]]) -> str:
    """One markdown table per anchor, each under its heading."""
    return "\n\n".join(f"### Against {a}\n\n{report.markdown_table(t)}" for a, t in bd.items())


def markdown(points, bd: dict[str, list[list[str]]], anchor_table, args, command: str,
             n_images: int) -> str:  # fmt: skip
    """The generated docs/BENCHMARKS.md."""
    return f"""# Rate-distortion benchmark

Generated by `{command}` on {date.today()} — do not edit by hand, re-run the command.
{n_images} Kodak images (768x512, `../shared/images/kodak`), TAESD encoder and decoder
(`{args.weights.name}`), CPU. Means over the images; bpp = file bits / image pixels.

![rate-distortion curves](rd.png)

## Results

{report.markdown_table(report.summary_table(points))}

- **float latent**: the plain encoder's unquantized latent decoded, the ceiling for a latent
  codec that stores what the encoder gives (no file).
- Codec methods: encode = the encoder's forward pass (`latent_of`, timed once per image and
  cached) + `compress` of that latent (refinement where the row has it, then coding); decode =
  `decompress` (`unpack` + decoder forward pass). Qualities are picked (coded without
  refinement) so the mean rate lands near {", ".join(map(str, METHOD_GRID))} bpp.
- **{DEFAULT_METHOD}** is the codec's default: the latent passes through the learned correction
  (`codec/correction.py`), then the default effort's refinement (`auto`: on this CPU one
  bfloat16 gradient step through the decoder, `codec/refine.py`) before it is coded; both are
  in the encode time. **{DEFAULT_METHOD} {report.UNREFINED}** is the corrected latent coded
  without refinement, **{DEFAULT_METHOD} {report.UNCORRECTED}** the encoder's latent as it is;
  `palette` (the 2022 method) and the other methods code that one too.
- JPEG, WebP (method 6), AVIF (Pillow's default speed) and JPEG XL (effort 7): for each
  target rate the quality is searched per image for the file nearest that size; targets a
  format cannot reach (mean off by more than {MAX_MISS:.0%}) are left out. Times are one
  encode at the chosen quality (not the search) and one decode.
- SSIMULACRA 2: the `ssimulacra2` Python package (a NumPy port of libjxl's metric).
- CVVDP JOD: ColorVideoVDP (`cvvdp`, its shipped parameters, no learned weights) on its
  `{DISPLAY}` display model (a 24-inch Full HD monitor at 200 cd/m² in office light, seen from
  twice its height: the gallery's 100% view on a common desktop monitor); 10 = no visible
  difference, each unit less one more just-objectionable difference.

## Bjøntegaard delta rate

Percent rate change of each of the codec's methods at equal quality against each anchor
(negative = fewer bytes), piecewise cubic (PCHIP) interpolation of log-rate over the quality
range both curves share, never extrapolated. MS-SSIM is taken as -10·log10(1 - MS-SSIM).
BD-PSNR: mean PSNR gain (dB) over the shared rate range. no overlap: the curves share less than
{MIN_SHARED:.0%} of the narrower one's range; n/a: a curve has fewer than two points.

{bd_sections(bd)}

## At the baseline's size

The palette baseline at its default (256 colours) against each method's curve (PCHIP on
log-rate):

{report.markdown_table(anchor_table)}

## Environment

{environment()}
- Times are wall-clock seconds on this machine (timed encodes and decodes run alone, not beside
  the `--jobs` processes): compare them with each other, not across machines.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rd", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kodak", type=Path, default=DEFAULT_KODAK, help="folder of Kodak PNGs")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="TAESD folder")
    parser.add_argument("--images", type=int, default=None, help="use the first N images")
    parser.add_argument("--quick", action="store_true", help="4 images, 3 rates per method")
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes for metrics and size searches"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV and cache folder")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.rd " + shlex.join(sys.argv[1:] if argv is None else argv)

    paths = image_paths(args.kodak, args.images or (4 if args.quick else None))
    full = not args.quick and len(paths) == len(image_paths(args.kodak))
    method_grid, format_grid = (
        (QUICK_GRID, QUICK_GRID) if args.quick else (METHOD_GRID, FORMAT_GRID)
    )

    codec = make_codec(args.weights)
    print(f"machine: {machine()}", flush=True)
    photos = [load_photo(codec, p, args.out / "latents") for p in tqdm(paths, desc="latents")]
    codec.decode_latents(torch.zeros(1, 4, 64, 64))  # warm-up, so no timing pays for it
    rows = score(ceiling_rows(codec, photos), args.jobs)
    corrected = (codec, [corrected_photo(codec, p) for p in photos])
    plain = (uncorrected(codec), photos)  # the encoder's own latents, coded as they are
    series = [(m, m, corrected if m == DEFAULT_METHOD else plain,
               "auto" if m == DEFAULT_METHOD else 0) for m in method_names()]  # fmt: skip
    series += [(f"{DEFAULT_METHOD} {report.UNREFINED}", DEFAULT_METHOD, corrected, 0),
               (f"{DEFAULT_METHOD} {report.UNCORRECTED}", DEFAULT_METHOD, plain, 0)]  # fmt: skip
    for label, method, (coded_by, inputs), effort in tqdm(series, desc="methods"):
        qualities = pick_qualities(coded_by, method, inputs, method_grid)
        rows += score(method_rows(coded_by, method, qualities, inputs, label, effort), args.jobs)
    for fmt in tqdm(standard.FORMATS.values(), desc="formats"):
        rows += score(format_rows(fmt, format_grid, photos, args.jobs), args.jobs)

    points = report.summarize(rows)
    methods = [label for label, *_ in series]
    bd = {a: report.bd_table(points, a, methods) for a in ANCHORS if a in report.curves(points)}
    anchor = next(p for p in points if p.method == "palette" and p.setting == "q=100")
    anchor_table = report.at_anchor(points, anchor)
    print(report.text_table(report.summary_table(points)), end="\n\n")
    for anchor, table in bd.items():
        print(f"BD-rate (%) and BD-PSNR (dB) against {anchor}\n" + report.text_table(table),
              end="\n\n")  # fmt: skip
    print("At the palette baseline's size\n" + report.text_table(anchor_table))

    docs = DOCS if full else args.out
    report.write_csv(rows, args.out / "rd.csv")
    report.plot(
        points, docs / "rd.png", f"Kodak ({len(photos)} images), TAESD latents vs image codecs"
    )
    page = docs / "BENCHMARKS.md"
    kept = page.read_text().partition(HAND_WRITTEN)[2] if page.exists() else ""
    page.write_text(
        markdown(points, bd, anchor_table, args, command, len(photos))
        + (HAND_WRITTEN + kept if kept else "")
    )
    print(f"\nwrote {args.out / 'rd.csv'}, {docs / 'rd.png'}, {docs / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
