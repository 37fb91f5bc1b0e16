"""Our default encode against WebP and AVIF at equal bytes, on any photos.

    python -m benchmarks.equal_bytes --images DIR_OR_FILE [DIR_OR_FILE ...] [--weights DIR]

Each photo (PNG or JPEG; a folder gives those in it, by name) is first scaled down to at most
1024 px a side. Then: the codec at its default settings, and WebP (method 6) and AVIF each at
the largest quality whose file is no larger than ours; bytes, PSNR, SSIMULACRA 2 and
ColorVideoVDP of each, the means, and on how many photos ours scores higher. Progress on stderr,
the table on stdout. Exit status: 0 done, 1 a photo that cannot be read or coded, 2 a bad
command line (a missing path, no photos, no weights).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from codec import Codec, CodecError, CodecSettings, load_codec
from codec.measures import bits_per_pixel
from codec.methods import get_method

from . import standard
from .common import DEFAULT_WEIGHTS, IMAGE_SUFFIXES
from .quality import measure
from .report import LABELS, NAMES, text_table

MAX_SIDE = 1024
SCORES = ("psnr", "ssimulacra2", "cvvdp")
OURS = "ours"


class Failure(Exception):
    """A reason to stop with one line and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Result:
    """One photo coded by one codec: its quality setting, file size and scores."""

    photo: str
    codec: str
    quality: int | None
    n_bytes: float
    bpp: float
    scores: dict[str, float]


def photo_paths(sources: Sequence[Path]) -> list[Path]:
    """The photos named: files as given, folders' PNG and JPEG files by name."""
    paths = []
    for source in sources:
        if source.is_dir():
            paths += sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file():
            paths.append(source)
        else:
            raise Failure(f"{source}: no such file or folder", 2)
    if not paths:
        raise Failure("no PNG or JPEG photos in " + ", ".join(map(str, sources)), 2)
    return paths


def load(path: Path) -> tuple[Image.Image, str | None]:
    """The photo upright in RGB, at most `MAX_SIDE` px a side, and a note if it was scaled."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:
        raise Failure(f"{path}: cannot read it as an image ({error})", 1) from error
    if max(image.size) <= MAX_SIDE:
        return image, None
    before = image.size
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    note = f"{path.name}: {before[0]}x{before[1]} scaled down to {image.width}x{image.height}"
    return image, note


def _result(name: str, image: Image.Image, codec: str, quality: int, data: bytes,
            decoded: Image.Image) -> Result:  # fmt: skip
    scores = measure(image, decoded, SCORES)
    return Result(name, codec, quality, len(data), bits_per_pixel(len(data), *image.size), scores)


def compare(codec: Codec, name: str, image: Image.Image) -> dict[str, Result | None]:
    """Ours at the default settings, then each rival at the largest quality within our bytes
    (None where even its lowest quality is larger)."""
    try:
        data = codec.compress(image).data
        decoded = codec.decompress(data)
    except CodecError as error:
        raise Failure(f"{name}: the codec failed ({error})", 1) from error
    quality = get_method(codec.settings.method).default_quality
    results: dict[str, Result | None] = {OURS: _result(name, image, OURS, quality, data, decoded)}
    for rival in standard.RIVALS:
        found = standard.fitted(image, standard.FORMATS[rival], len(data))
        if found is None:
            results[rival] = None
            continue
        decoded = standard.decode(found.data)
        results[rival] = _result(name, image, rival, found.quality, found.data, decoded)
    return results


def _row(photo: str, result: Result) -> list[str]:
    quality = "" if result.quality is None else f"q={result.quality}"
    return [photo, result.codec, quality, f"{result.n_bytes:.0f}", f"{result.bpp:.4f}",
            *(f"{result.scores[k]:.2f}" for k in SCORES)]  # fmt: skip


def _mean(results: Sequence[Result]) -> Result:
    scores = {k: float(np.mean([r.scores[k] for r in results])) for k in SCORES}
    mean = (float(np.mean([getattr(r, f) for r in results])) for f in ("n_bytes", "bpp"))
    return Result("mean", results[0].codec, None, *mean, scores)


def summary(table: Sequence[dict[str, Result | None]]) -> tuple[list[list[str]], list[str]]:
    """The table (per photo, then means) and the lines under it."""
    header = ["photo", "codec", "quality", "bytes", "bpp", *(LABELS[k] for k in SCORES)]
    rows = [header] + [_row(r.photo, r) for results in table for r in results.values() if r]
    ours = [results[OURS] for results in table]
    rows.append(_row(f"mean of {len(ours)}", _mean(ours)))
    lines = []
    for rival in standard.RIVALS:
        pairs = [(results[OURS], results[rival]) for results in table if results[rival]]
        missing = [results[OURS].photo for results in table if not results[rival]]
        if missing:
            lines.append(f"{rival} cannot be made as small: " + ", ".join(missing))
        if not pairs:
            continue
        label = f"mean of {len(pairs)} ({rival} fits)"
        rows += [_row(label, _mean(side)) for side in zip(*pairs, strict=True)]
        wins = (sum(o.scores[k] > r.scores[k] for o, r in pairs) for k in SCORES)
        counts = ", ".join(
            f"{NAMES[k]} {n} of {len(pairs)}" for k, n in zip(SCORES, wins, strict=True)
        )
        lines.append(f"ours better than {rival} on {counts}")
    return rows, lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _run(argv: Sequence[str] | None) -> None:
    parser = _Parser(prog="python -m benchmarks.equal_bytes", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help="photos, or folders of them")  # fmt: skip
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="TAESD folder")
    args = parser.parse_args(argv)
    if not args.weights.exists():
        raise Failure(f"{args.weights}: no such weights (pass --weights)", 2)
    paths = photo_paths(args.images)
    photos = [(path.stem, *load(path)) for path in paths]
    weights = str(args.weights)
    codec = load_codec(CodecSettings(encoder=weights, decoder=weights, device="cpu"))
    table = [compare(codec, name, image) for name, image, _ in tqdm(photos, desc="photos")]
    rows, lines = summary(table)
    notes = [f"note: {note} first (long side <= {MAX_SIDE} px)" for *_, note in photos if note]
    print("\n".join([text_table(rows), "", *lines, *notes]))


def main(argv: Sequence[str] | None = None) -> None:
    """The command: exits 1 or 2 with one line on stderr when it cannot finish."""
    try:
        _run(argv)
    except Failure as failure:
        print(f"equal_bytes: {failure}", file=sys.stderr)
        sys.exit(failure.status)


if __name__ == "__main__":
    main()
