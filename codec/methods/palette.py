"""`palette`: the 2022 method (Bühlmann) reproduced as the baseline to beat.

The scaled latent is quantized to 8 bits with the step of the original (0.18215 in raw SD 1.x
units, 0.18215² scaled), the `(H, W, 4)` bytes are treated as an RGBA image and reduced to a
palette with libimagequant at dithering level 1.0, and palette + indices are zlib-compressed.
`quality` sets the palette size: 256 colours at 100 (the original), 16 at 50, 2 at 12.
"""

from __future__ import annotations

import struct
import zlib

import imagequant
import numpy as np
from PIL import Image

from ..errors import LatentFileError
from . import register
from .base import Compressed, QuantizationMethod
from .bounded import inflate_exact

STEP = 0.18215**2
CENTER = 127.5
_PARAMS = struct.Struct("<H")


def palette_colours(quality: int) -> int:
    """Palette size for a quality in 1..100: 256 ** (quality / 100), at least 2."""
    return max(2, min(256, round(256 ** (quality / 100))))


class PaletteMethod(QuantizationMethod):
    """8-bit latents, a dithered palette over the 4 channels, zlib."""

    name = "palette"
    id = 1
    default_quality = 100

    def compress(self, latent: np.ndarray, quality: int) -> Compressed:
        if latent.shape[0] != 4:
            raise ValueError("the palette method needs 4-channel latents (an RGBA image)")
        q = np.clip(np.floor(latent / STEP + CENTER + 0.5), 0, 255).astype(np.uint8)
        rgba = Image.fromarray(np.ascontiguousarray(q.transpose(1, 2, 0)), "RGBA")
        indexed = imagequant.quantize_pil_image(
            rgba, dithering_level=1.0, max_colors=palette_colours(quality)
        )
        colours = len(indexed.getpalette("RGBA")) // 4
        palette = bytes(indexed.getpalette("RGBA"))
        raw = palette + indexed.tobytes()
        return Compressed(_PARAMS.pack(colours), zlib.compress(raw, 9))

    def decompress(self, params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        channels, height, width = shape
        if len(params) != _PARAMS.size or channels != 4:
            raise LatentFileError("bad palette parameters")
        (colours,) = _PARAMS.unpack(params)
        if not 1 <= colours <= 256:
            raise LatentFileError(f"bad palette size {colours}")
        raw = inflate_exact(payload, colours * 4 + height * width)
        palette = np.frombuffer(raw, np.uint8, colours * 4).reshape(colours, 4)
        indices = np.frombuffer(raw, np.uint8, offset=colours * 4).reshape(height, width)
        if indices.max() >= colours:
            raise LatentFileError("palette index out of range")
        q = palette[indices].transpose(2, 0, 1).astype(np.float32)
        return (q - CENTER) * np.float32(STEP)


register(PaletteMethod())
