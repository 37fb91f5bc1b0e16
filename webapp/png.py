"""Decoded images -> PNG bytes, and the thumbnails the gallery serves: pure functions.

Thumbnails are made from the full-size decode (`thumbnail`, Lanczos). Measured with TAESD on 4
Kodak images (768x512, CPU): full decode then resize is 25.8 dB (256 px) / 23.6 dB (512 px)
PSNR against the downsized original; decoding an area-downsampled latent instead is 3x / 1.6x
faster (1.8 s / 3.3 s against 5.2 s) but loses 6.7 dB / 3.7 dB (blotchy colour, lost detail).
With the full size cached, a thumbnail costs a PNG read, a resize and a PNG write (~60 ms for
512 px on 2 busy CPU cores) instead of a decode.
"""

from __future__ import annotations

import io

from PIL import Image

from codec.images import fit_within, thumbnail_size

THUMB_WIDTHS = (256, 512)
DISPLAY_SIDE = 1024
"""The longest side of an image's display render, what its page shows: about what a laptop
screen's viewer holds, and a quarter of a 2048-px photo's pixels (about 2 s on a 2-core CPU)."""
PNG_COMPRESS_LEVEL = 1  # 3x faster than the default 6 for ~5% more bytes on decoded photos


def effective_width(image_width: int, width: int | None) -> int | None:
    """The render width to use: None (full size) unless `width` makes the image smaller."""
    return width if width is not None and width < image_width else None


def display_size(width: int, height: int) -> tuple[int, int] | None:
    """The size of an image's display render (fitting `DISPLAY_SIDE` squared), or None when the
    image itself fits: its full size is its display render."""
    if max(width, height) <= DISPLAY_SIDE:
        return None
    return fit_within(width, height, DISPLAY_SIDE)


def display_width(width: int, height: int) -> int | None:
    """The `w` of an image's display render: its display width, or None (its full size)."""
    display = display_size(width, height)
    return display[0] if display else None


def render_widths(width: int, height: int) -> list[int]:
    """The `w` values an image's renders take: the thumbnail widths, `DISPLAY_SIDE` and its
    display width (narrower for a portrait)."""
    display = display_width(width, height)
    return sorted({*THUMB_WIDTHS, DISPLAY_SIDE, *([display] if display else [])})


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes without metadata."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    """The image of PNG bytes, loaded."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        return image.convert("RGB")


def thumbnail(image: Image.Image, width: int) -> Image.Image:
    """The full-size image scaled to `width` (aspect kept), Lanczos: the one thumbnail step."""
    size = thumbnail_size(image.width, image.height, width)
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def rendered_bytes(width: int, height: int) -> int:
    """About the most cache bytes an image's renders take (full size and thumbnails): raw RGB,
    which PNGs of decoded photos stay under."""
    scale = 1 + sum((w / width) ** 2 for w in render_widths(width, height) if w < width)
    return int(3 * width * height * scale)
