"""Decoded images -> AVIF bytes for pages: a fraction of the PNG's bytes, no visible loss added.

Each render is encoded 4:4:4 at the lowest quality of `QUALITIES` whose PSNR against the
decoded image is at least `MIN_PSNR`: the AVIF differs from the PNG by less than the decode
differs from the upload. The first suffices for most display renders (1024 px: 40.0-42.8 dB at
q80 on decoded camera photos, 60-100 KB against 0.7-0.8 MB of PNG, 50-60 ms on a 2-core AMD
EPYC); thumbnails of fine texture need more (a 256-px one of backlit leaves: 37.2 dB at q90,
42.1 dB at q96 for 34 KB; of bamboo 40.8 dB at q92 for 18 KB, against 60-72 KB of PNG).
"""

from __future__ import annotations

import io

from PIL import Image

from codec.rate_control import psnr

QUALITIES = (80, 86, 91, 95, 98)
MIN_PSNR = 40.0
SPEED = 8  # libavif's encoder speed 0..10: 8 is within 0.1 dB of 6 at a third of the time


def encode_avif(image: Image.Image) -> bytes:
    """AVIF bytes of an RGB image, at least `MIN_PSNR` dB from it where `QUALITIES` reach it."""
    for quality in QUALITIES:
        buffer = io.BytesIO()
        image.save(buffer, "AVIF", quality=quality, speed=SPEED, subsampling="4:4:4")
        data = buffer.getvalue()
        if psnr(image, decode_avif(data)) >= MIN_PSNR:
            break
    return data


def decode_avif(data: bytes) -> Image.Image:
    """The RGB image of AVIF bytes."""
    with Image.open(io.BytesIO(data), formats=["AVIF"]) as image:
        return image.convert("RGB")
