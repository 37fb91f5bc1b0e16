"""Pillow's image codecs (JPEG, WebP, AVIF, JPEG XL) with the quality searched for a file size."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
from PIL import Image


@dataclass(frozen=True)
class Format:
    """A Pillow format, its quality range and fixed encoder options."""

    name: str
    pillow: str
    qualities: range
    options: dict = field(default_factory=dict)


FORMATS = {
    f.name: f
    for f in (
        Format("JPEG", "JPEG", range(1, 96)),  # Pillow's 4:2:0 default, optimize=False
        Format("WebP", "WEBP", range(101), {"method": 6}),
        Format("AVIF", "AVIF", range(101)),  # libavif/aom, Pillow's default speed
        Format("JPEG XL", "JXL", range(101)),  # pillow-jxl-plugin, effort 7
    )
}


@dataclass(frozen=True)
class Encoded:
    """One encoding of an image: the quality used, the file and the seconds it took."""

    quality: int
    data: bytes
    seconds: float


def encode(image: Image.Image, fmt: Format, quality: int) -> Encoded:
    """Encode `image` with `fmt` at `quality`, timed."""
    buffer = io.BytesIO()
    start = time.perf_counter()
    image.save(buffer, fmt.pillow, quality=quality, **fmt.options)
    return Encoded(quality, buffer.getvalue(), time.perf_counter() - start)


def decode(data: bytes) -> Image.Image:
    """Decode a file made by `encode` to RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def closest_quality(
    encode_at: Callable[[int], Encoded], qualities: range, target_bytes: int
) -> Encoded:
    """The encoding whose size is nearest `target_bytes`, by bisection over `qualities`.

    Assumes size grows with quality (true up to small wiggles for these codecs);
    `encode_at` should be memoized when several targets are searched.
    """
    low, high = qualities.start, qualities.stop - 1
    while high - low > 1:
        middle = (low + high) // 2
        if len(encode_at(middle).data) <= target_bytes:
            low = middle
        else:
            high = middle
    candidates = (encode_at(low), encode_at(high))
    return min(candidates, key=lambda e: (abs(len(e.data) - target_bytes), e.quality))


def matched_sizes(image: Image.Image, fmt: Format, targets_bytes: list[int]) -> list[Encoded]:
    """For each target size, the encoding of `image` nearest to it (encodings shared)."""
    memo: dict[int, Encoded] = {}

    def encode_at(quality: int) -> Encoded:
        if quality not in memo:
            memo[quality] = encode(image, fmt, quality)
        return memo[quality]

    return [closest_quality(encode_at, fmt.qualities, t) for t in targets_bytes]
