"""Images in and out: safe decoding of untrusted bytes, RGB conversion, tensors, padding."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from .errors import ImageInputError

register_heif_opener()
Image.init()

DEFAULT_MAX_PIXELS = 50_000_000
SOURCE_SIZE = "source_size"
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "TIFF", "BMP", "HEIF")
BACKGROUND = (255, 255, 255)
_SRGB = ImageCms.createProfile("sRGB")

ImageSource = bytes | str | Path | BinaryIO


def open_image(
    source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode an untrusted image into 8-bit RGB, or raise `ImageInputError`.

    The format is decided by the bytes (allowlist `ALLOWED_FORMATS`), the size is checked
    against `max_pixels` before any pixel is decoded, the first frame of an animation is taken,
    EXIF orientation is applied, and an embedded ICC profile is converted to sRGB. With
    `max_side`, an image longer than that is scaled down to it (`fit_within`; a JPEG is first
    decoded at the smallest DCT scale that still covers it, for a fraction of the time); its
    `info[SOURCE_SIZE]` keeps the size it had, upright.
    """
    with _decoding(max_pixels):
        image = _open_checked(source, max_pixels)
        full = image.size
        if max_side is not None:
            image.draft(None, fit_within(*full, max_side))
        image.seek(0)
        image.load()
        decoded = image.size
        image = ImageOps.exif_transpose(image)
        turned = image.size != decoded
    if image.width < 1 or image.height < 1:
        raise ImageInputError("image has no pixels")
    image = to_rgb(image)
    if max_side is not None and max(image.size) > max_side:
        image = image.resize(fit_within(*image.size, max_side), Image.Resampling.LANCZOS)
    image.info[SOURCE_SIZE] = full[::-1] if turned else full
    return image


def image_size(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an untrusted image read from its header alone (no pixel decoded),
    or `ImageInputError` as `open_image` would raise for it (format, pixel limit)."""
    with _decoding(max_pixels):
        return _open_checked(source, max_pixels).size


def fit_within(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled down so that neither exceeds `side` (unchanged if none does)."""
    if max(width, height) <= side:
        return width, height
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@contextmanager
def _decoding(max_pixels: int) -> Iterator[None]:
    """Turn what Pillow raises for a bad or oversized file into an `ImageInputError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageInputError(
                f"image is over the limit of {max_pixels:,} pixels ({exc})"
            ) from None
        except UnidentifiedImageError:
            raise ImageInputError(
                f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})"
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageInputError(f"cannot decode image: {exc}") from None


def _open_checked(source: ImageSource, max_pixels: int) -> Image.Image:
    """The lazily opened image (header read) of an allowed format within `max_pixels`."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    image = Image.open(fp, formats=ALLOWED_FORMATS)
    if image.width * image.height > max_pixels:
        raise ImageInputError(
            f"image is {image.width}x{image.height} = {image.width * image.height:,} "
            f"pixels, over the limit of {max_pixels:,} pixels"
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit scaled down, CMYK/palette/grey converted, alpha composited on white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if grey.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(grey / peak * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(grey * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "RGBA", "CMYK", "L"):
        image = _to_srgb(image, icc)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """Convert through the embedded ICC profile; an unusable profile is ignored."""
    mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """`(1, 3, H, W)` float32 in [0, 1] from an RGB image."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """An RGB image from a `(3, H, W)` float tensor in [0, 1]."""
    array = tensor.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad `(B, C, H, W)` at the bottom and right by edge replication to multiples of `multiple`."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return images
    return torch.nn.functional.pad(images, (0, pad_w, 0, pad_h), mode="replicate")


def thumbnail_size(width: int, height: int, thumbnail_width: int) -> tuple[int, int]:
    """The (width, height) of a `thumbnail_width` thumbnail of a `width`×`height` image, aspect
    kept."""
    return thumbnail_width, max(1, round(height * thumbnail_width / width))
