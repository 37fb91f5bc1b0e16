"""The sizes an image is rendered at: card thumbnails, the display render, the full size.

Thumbnails are made from a larger decode (`formats.thumbnail`, Lanczos) or decoded straight to
their size by the thumbnail decoder. Measured with TAESD on 4 Kodak images (768x512, CPU): full
decode then resize is 25.8 dB (256 px) / 23.6 dB (512 px) PSNR against the downsized original;
decoding an area-downsampled latent instead is 3x / 1.6x faster but loses 6.7 dB / 3.7 dB
(blotchy colour, lost detail).
"""

from __future__ import annotations

from codec.images import fit_within

THUMB_WIDTHS = (256, 512)
CARD_WIDTH = THUMB_WIDTHS[0]
"""A gallery card's `src`; the larger widths go in its `srcset`."""
DISPLAY_SIDE = 1024
"""The longest side of an image's display render, what its page shows: about what a laptop
screen's viewer holds, and a quarter of a 2048-px photo's pixels (about 2 s on a 2-core CPU)."""


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


def rendered_bytes(width: int, height: int) -> int:
    """About the most cache bytes an image's renders take (full size and thumbnails): raw RGB,
    which PNGs of decoded photos stay under."""
    scale = 1 + sum((w / width) ** 2 for w in render_widths(width, height) if w < width)
    return int(3 * width * height * scale)
