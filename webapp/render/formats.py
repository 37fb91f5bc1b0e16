"""Decoded images -> PNG or AVIF bytes (`ENCODERS`), and the one resize step: pure functions.

PNG is for downloads and link previews (`PNG_COMPRESS_LEVEL` 1: 3x faster than the default 6
for ~5% more bytes on decoded photos). AVIF is what pages show: each render is encoded 4:4:4
at the lowest quality of `AVIF_QUALITIES` whose PSNR against the decoded image is at least
`AVIF_MIN_PSNR`, so the AVIF differs from the PNG by less than the decode differs from the
upload. The first suffices for most display renders (1024 px: 40.0-42.8 dB at q80 on decoded
camera photos, 60-100 KB against 0.7-0.8 MB of PNG, 50-60 ms on a 2-core AMD EPYC); thumbnails
of fine texture need more (a 256-px one of backlit leaves: 37.2 dB at q90, 42.1 dB at q96 for
34 KB; of bamboo 40.8 dB at q92 for 18 KB, against 60-72 KB of PNG).
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image

from codec.images import thumbnail_size
from codec.measures import psnr

PNG_COMPRESS_LEVEL = 1
AVIF_QUALITIES = (80, 86, 91, 95, 98)
AVIF_MIN_PSNR = 40.0
AVIF_SPEED = 8  # libavif's encoder speed 0..10: 8 is within 0.1 dB of 6 at a third of the time


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes without metadata."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    """The image of PNG bytes, loaded."""
    return _decode(data, "PNG")


def encode_avif(image: Image.Image) -> bytes:
    """AVIF bytes of an RGB image, at least `AVIF_MIN_PSNR` dB from it where `AVIF_QUALITIES`
    reach it."""
    for quality in AVIF_QUALITIES:
        buffer = io.BytesIO()
        image.save(buffer, "AVIF", quality=quality, speed=AVIF_SPEED, subsampling="4:4:4")
        data = buffer.getvalue()
        if psnr(image, decode_avif(data)) >= AVIF_MIN_PSNR:
            break
    return data


def decode_avif(data: bytes) -> Image.Image:
    """The RGB image of AVIF bytes."""
    return _decode(data, "AVIF")


ENCODERS: dict[str, Callable[[Image.Image], bytes]] = {"png": encode_png, "avif": encode_avif}
MEDIA_TYPES = {"png": "image/png", "avif": "image/avif"}
"""Render formats by extension: PNG (downloads, link previews), AVIF (what pages show)."""


def thumbnail(image: Image.Image, width: int) -> Image.Image:
    """The image scaled to `width` (aspect kept), Lanczos: the one resize step."""
    size = thumbnail_size(image.width, image.height, width)
    return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _decode(data: bytes, fmt: str) -> Image.Image:
    with Image.open(io.BytesIO(data), formats=[fmt]) as image:
        return image.convert("RGB")
