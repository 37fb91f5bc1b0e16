"""Untrusted image bytes in: formats, orientation, modes, alpha, limits."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from codec.errors import ImageInputError
from codec.images import BACKGROUND, SOURCE_SIZE, image_size, open_image, pad_to_multiple


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 40, height: int = 24) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "AVIF", "GIF", "TIFF", "BMP"])
def test_allowed_formats_decode_to_rgb(fmt):
    image = open_image(encoded(gradient(), fmt))
    assert image.mode == "RGB"
    assert image.size == (40, 24)


def test_heic_through_pillow_heif():
    source = gradient()
    image = open_image(encoded(source, "HEIF", quality=90, chroma=444))
    assert image.size == (40, 24)
    difference = np.abs(np.asarray(image, float) - np.asarray(source, float))
    assert difference.mean() < 2.0 and difference.max() < 16  # 0.6 and 3 measured


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(
    ("orientation", "size", "corner"),
    [(1, (40, 24), "top left"), (3, (40, 24), "bottom right"),
     (6, (24, 40), "top right"), (8, (24, 40), "bottom left")],
)  # fmt: skip
def test_exif_orientation_is_applied(fmt, orientation, size, corner):
    """A photo whose top-left corner is red, shown upright: 3 turns it half a turn, 6 a quarter
    turn clockwise, 8 a quarter turn counterclockwise, which moves the red corner there."""
    pixels = np.full((24, 40, 3), 128, np.uint8)
    pixels[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = open_image(encoded(Image.fromarray(pixels, "RGB"), fmt, exif=exif))
    assert image.size == size
    shown = np.asarray(image, float)
    corners = {
        "top left": shown[:4, :4], "top right": shown[:4, -4:],
        "bottom left": shown[-4:, :4], "bottom right": shown[-4:, -4:],
    }  # fmt: skip
    red = {name for name, block in corners.items() if np.abs(block - (255, 0, 0)).max() < 40}
    assert red == {corner}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(("orientation", "upright"), [(1, (1600, 1000)), (6, (1000, 1600))])
def test_max_side_scales_down_upright_and_keeps_the_source_size(fmt, orientation, upright):
    """A 1600x1000 photo (turned by its EXIF or not) under `max_side=400`: stored at 400 px on
    its longest side, upright, with the pixels of a plain resize (a JPEG's reduced DCT decode
    included); the size it was uploaded at is kept."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = gradient(1600, 1000)
    data = encoded(photo, fmt, exif=exif)
    image = open_image(data, max_side=400)
    assert image.size == tuple(400 * side // 1600 for side in upright)
    assert image.info[SOURCE_SIZE] == upright
    expected = open_image(data).resize(image.size, Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(image, float) - np.asarray(expected, float))
    assert difference.mean() < 2.0
    unchanged = open_image(data, max_side=2000)
    assert unchanged.size == upright and unchanged.info[SOURCE_SIZE] == upright


def test_image_size_reads_only_the_header():
    assert image_size(png_claiming(9000, 8000), max_pixels=10**8) == (9000, 8000)
    with pytest.raises(ImageInputError, match="over the limit"):
        image_size(png_claiming(9000, 8000), max_pixels=5 * 10**7)
    with pytest.raises(ImageInputError, match="not an image"):
        image_size(b"hello")


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    image = open_image(encoded(rgba, "PNG"))
    assert image.getpixel((1, 1)) == BACKGROUND
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_grey_keeps_its_range():
    grey = np.full((6, 6), 65535 // 2, dtype=np.uint16)
    image = open_image(encoded(Image.fromarray(grey), "PNG"))
    assert abs(image.getpixel((0, 0))[0] - 128) <= 1


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA", "1"])
def test_other_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = open_image(encoded(gradient().convert(mode), fmt))
    assert image.mode == "RGB"


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert open_image(data).getpixel((5, 5)) == (255, 0, 0)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("side", "limit"), [(30000, 40_000_000), (5000, 1_000_000)])
def test_pixel_limit_refuses_before_decoding(side, limit):
    with pytest.raises(ImageInputError, match="over the limit"):
        open_image(png_claiming(side, side), max_pixels=limit)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is text pretending to be a jpg", b"", bytes(range(256)) * 64],
)
def test_non_images_are_refused(data):
    with pytest.raises(ImageInputError, match="not an image"):
        open_image(data)


def test_truncated_jpeg_is_refused():
    data = encoded(gradient(200, 200), "JPEG")
    with pytest.raises(ImageInputError):
        open_image(data[: len(data) // 3])


def test_disallowed_format_is_refused():
    with pytest.raises(ImageInputError, match="allowed format"):
        open_image(encoded(gradient(), "PPM"))


def test_padding_replicates_edges():
    import torch

    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 4, 4)
    assert padded[0, 0, 3, 3] == x[0, 0, 1, 2]
    assert padded[0, 0, 0, 3] == x[0, 0, 0, 2]
