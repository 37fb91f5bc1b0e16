"""The same crop of three Kodak images from our codec at about 0.12 bpp, and from WebP and AVIF
at equal bytes (the largest quality whose file is no larger than ours), each labelled with its
quality, bytes, PSNR and SSIMULACRA 2 of the whole image: docs/side_by_side.png.

    python -m benchmarks.side_by_side [--kodak DIR] [--weights DIR] [--bpp 0.12] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from codec import Codec
from codec.measures import psnr
from codec.settings import DEFAULT_METHOD

from . import standard
from .common import (
    DEFAULT_KODAK,
    DEFAULT_OUT,
    DEFAULT_WEIGHTS,
    DOCS,
    Photo,
    corrected_photo,
    load_photo,
    make_codec,
)
from .quality import ssimulacra2

IMAGES = ("kodim23", "kodim15", "kodim19")
CROP = 256
LABEL_HEIGHT = 60


def crop_box(image: Image.Image) -> tuple[int, int, int, int]:
    """The central `CROP` x `CROP` square."""
    left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
    return left, top, left + CROP, top + CROP


def ours(codec: Codec, photo: Photo, target_bytes: int) -> standard.Encoded:
    """The default method's file (the corrected latent, refined at `auto`) at the quality whose
    size is nearest the target."""

    def encode_at(quality: int) -> standard.Encoded:
        data = codec.compress(photo.image, latent=photo.latent, method=DEFAULT_METHOD,
                              quality=quality, effort="auto").data  # fmt: skip
        return standard.Encoded(quality, data, 0.0)

    return standard.closest_quality(encode_at, range(1, 101), target_bytes)


def labelled(tile: Image.Image, text: str, font: ImageFont.ImageFont) -> Image.Image:
    """The tile with a white caption band above it."""
    canvas = Image.new("RGB", (tile.width, tile.height + LABEL_HEIGHT), "white")
    canvas.paste(tile, (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).multiline_text((6, 3), text, fill="black", font=font, spacing=2)
    return canvas


def panel(photo: Photo, name: str, encoded: standard.Encoded | None, decoded: Image.Image | None,
          font: ImageFont.ImageFont) -> Image.Image:  # fmt: skip
    """The crop of a decoded image captioned with its quality, bytes, PSNR and SSIMULACRA 2 (a
    grey square when the format cannot make a file that small)."""
    box = crop_box(photo.image)
    if encoded is None or decoded is None:
        return labelled(Image.new("RGB", (CROP, CROP), "lightgray"),
                        f"{name}\ncannot be made as small", font)  # fmt: skip
    caption = (f"{name}  q={encoded.quality}  {len(encoded.data)} B\n"
               f"PSNR {psnr(photo.image, decoded):.2f} dB\n"
               f"SSIMU2 {ssimulacra2(photo.image, decoded):.1f}")  # fmt: skip
    return labelled(decoded.crop(box), caption, font)


def row(codec: Codec, photo: Photo, bpp: float, font: ImageFont.ImageFont) -> list[Image.Image]:
    """Original, ours at about `bpp`, then WebP and AVIF within our bytes, each labelled."""
    w, h = photo.image.size
    original = labelled(photo.image.crop(crop_box(photo.image)),
                        f"{photo.name} original\n{w}x{h}", font)  # fmt: skip
    mine = ours(codec, corrected_photo(codec, photo), round(bpp * w * h / 8))
    tiles = [original, panel(photo, f"ours ({DEFAULT_METHOD})", mine,
                             codec.decompress(mine.data), font)]  # fmt: skip
    for name in standard.RIVALS:
        rival = standard.fitted(photo.image, standard.FORMATS[name], len(mine.data))
        decoded = standard.decode(rival.data) if rival else None
        tiles.append(panel(photo, name, rival, decoded, font))
    return tiles


def grid(rows: Sequence[Sequence[Image.Image]], gap: int = 4) -> Image.Image:
    """Rows of equal-size tiles on a white sheet."""
    tw, th = rows[0][0].size
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * (tw + gap) - gap, len(rows) * (th + gap) - gap), "white")
    for y, tiles in enumerate(rows):
        for x, tile in enumerate(tiles):
            sheet.paste(tile, (x * (tw + gap), y * (th + gap)))
    return sheet


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.side_by_side")
    parser.add_argument("--kodak", type=Path, default=DEFAULT_KODAK, help="folder of Kodak PNGs")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="TAESD folder")
    parser.add_argument("--bpp", type=float, default=0.12, help="target bits per pixel")
    parser.add_argument("--out", type=Path, default=DOCS / "side_by_side.png")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    codec = make_codec(args.weights)
    font = ImageFont.load_default(size=15)
    photos = [load_photo(codec, args.kodak / f"{name}.png", DEFAULT_OUT / "latents")
              for name in IMAGES]  # fmt: skip
    sheet = grid([row(codec, photo, args.bpp, font) for photo in photos])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
