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


RIVALS = ("WebP", "AVIF")
"""The formats our files are compared with at equal bytes."""


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


EncodeAt = Callable[[int], Encoded]
"""An image's encoding at a quality."""


def _bracket(encode_at: EncodeAt, qualities: range, target_bytes: int) -> tuple[int, int]:
    """Neighbouring qualities `(low, low + 1)` by bisection over `qualities`: `low` fits in
    `target_bytes` and `low + 1` does not, unless the first does not fit or the last does.

    Assumes size grows with quality (true up to small wiggles for these codecs).
    """
    low, high = qualities.start, qualities.stop - 1
    while high - low > 1:
        middle = (low + high) // 2
        if len(encode_at(middle).data) <= target_bytes:
            low = middle
        else:
            high = middle
    return low, high


def closest_quality(encode_at: EncodeAt, qualities: range, target_bytes: int) -> Encoded:
    """The encoding whose size is nearest `target_bytes`, by bisection over `qualities`;
    `encode_at` should be memoized when several targets are searched."""
    candidates = map(encode_at, _bracket(encode_at, qualities, target_bytes))
    return min(candidates, key=lambda e: (abs(len(e.data) - target_bytes), e.quality))


def largest_within(encode_at: EncodeAt, qualities: range, target_bytes: int) -> Encoded | None:
    """The encoding at the largest quality whose file is at most `target_bytes` (the next
    quality's is over it), or None if even the lowest quality's is over."""
    for quality in reversed(_bracket(encode_at, qualities, target_bytes)):
        if len(encode_at(quality).data) <= target_bytes:
            return encode_at(quality)
    return None


def memoized(image: Image.Image, fmt: Format) -> EncodeAt:
    """`encode(image, fmt, quality)`, each quality encoded once."""
    memo: dict[int, Encoded] = {}

    def encode_at(quality: int) -> Encoded:
        if quality not in memo:
            memo[quality] = encode(image, fmt, quality)
        return memo[quality]

    return encode_at


def matched_sizes(image: Image.Image, fmt: Format, targets_bytes: list[int]) -> list[Encoded]:
    """For each target size, the encoding of `image` nearest to it (encodings shared)."""
    encode_at = memoized(image, fmt)
    return [closest_quality(encode_at, fmt.qualities, t) for t in targets_bytes]


def fitted(image: Image.Image, fmt: Format, target_bytes: int) -> Encoded | None:
    """`image` in `fmt` at the largest quality whose file is at most `target_bytes`, or None
    if it cannot be made that small."""
    return largest_within(memoized(image, fmt), fmt.qualities, target_bytes)
