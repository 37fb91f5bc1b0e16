"""The same crop of three Kodak images at about 0.12 bpp from our codec, the palette baseline,
JPEG, WebP and AVIF, labelled with the whole image's bpp and PSNR: docs/side_by_side.png.

    python -m benchmarks.side_by_side [--kodak DIR] [--weights DIR] [--bpp 0.12] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from codec import Codec
from codec.measures import bits_per_pixel, psnr
from codec.methods import method_names
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
    uncorrected,
)

IMAGES = ("kodim23", "kodim15", "kodim19")
CROP = 256
LABEL_HEIGHT = 40
METHODS = ("ec", "palette")
FORMATS = ("JPEG", "WebP", "AVIF")


def crop_box(image: Image.Image) -> tuple[int, int, int, int]:
    """The central `CROP` x `CROP` square."""
    left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
    return left, top, left + CROP, top + CROP


def method_tile(
    codec: Codec, method: str, photo: Photo, target_bytes: int, effort: int | str
) -> tuple[Image.Image, int]:
    """A codec method's decoded image at the quality whose file is nearest the target, and bytes
    (the latent refined at `effort`)."""

    def encode_at(quality: int) -> standard.Encoded:
        data = codec.compress(photo.image, latent=photo.latent, method=method, quality=quality,
                              effort=effort).data  # fmt: skip
        return standard.Encoded(quality, data, 0.0)

    encoded = standard.closest_quality(encode_at, range(1, 101), target_bytes)
    return codec.decompress(encoded.data), len(encoded.data)


def format_tile(name: str, photo: Photo, target_bytes: int) -> tuple[Image.Image, int]:
    """A Pillow codec's decoded image at the quality whose file is nearest the target, and bytes."""
    (encoded,) = standard.matched_sizes(photo.image, standard.FORMATS[name], [target_bytes])
    return standard.decode(encoded.data), len(encoded.data)


def labelled(tile: Image.Image, text: str, font: ImageFont.ImageFont) -> Image.Image:
    """The tile with a white caption band above it."""
    canvas = Image.new("RGB", (tile.width, tile.height + LABEL_HEIGHT), "white")
    canvas.paste(tile, (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).multiline_text((6, 3), text, fill="black", font=font, spacing=2)
    return canvas


def row(
    codecs: tuple[Codec, Codec], photo: Photo, bpp: float, font: ImageFont.ImageFont
) -> list[Image.Image]:
    """Original, then each codec's crop, each labelled; `codecs` are the codec and the same
    without its correction (`uncorrected`)."""
    w, h = photo.image.size
    target = round(bpp * w * h / 8)
    box = crop_box(photo.image)
    tiles = [labelled(photo.image.crop(box), f"{photo.name} original\n{w}x{h}", font)]
    codec, plain = codecs
    decoders = [  # the default method corrected and refined at `auto`, the others as they are
        (m, partial(method_tile, codec, m, corrected_photo(codec, photo), target, "auto")
         if m == DEFAULT_METHOD else partial(method_tile, plain, m, photo, target, 0))
        for m in METHODS if m in method_names()
    ]  # fmt: skip
    decoders += [(f, lambda f=f: format_tile(f, photo, target)) for f in FORMATS]
    for name, run in decoders:
        decoded, n_bytes = run()
        caption = (f"{name}  {bits_per_pixel(n_bytes, w, h):.3f} bpp\n"
                   f"PSNR {psnr(photo.image, decoded):.2f} dB")  # fmt: skip
        tiles.append(labelled(decoded.crop(box), caption, font))
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
    codecs = (codec, uncorrected(codec))
    sheet = grid([row(codecs, photo, args.bpp, font) for photo in photos])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
