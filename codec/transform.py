"""The analysis transform (CompressAI's `g_a`): an image's float latent, as `Codec.compress`
codes it.

Benchmarks and tests that code one latent many times (at several qualities, methods or
efforts) take it here once and hand it to `Codec.compress(image, latent=...)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .images import image_to_tensor, pad_to_multiple
from .tiling import run_tiled

if TYPE_CHECKING:
    from .pipeline import Codec

ENCODE_OVERLAP = 64
"""Pixels shared by neighbouring encoder tiles."""


def latent_of(codec: Codec, image: Image.Image, *, corrected: bool = True) -> np.ndarray:
    """The float32 scaled latent `(4, ⌈H/8⌉, ⌈W/8⌉)` of an RGB image: the codec's encoder's
    (in tiles of `settings.tile` pixels), moved by its learned correction unless `corrected`
    is False."""
    encoder = codec.encoder
    scale = encoder.space.downscale
    pixels = pad_to_multiple(image_to_tensor(image), scale)
    tile = codec.settings.tile
    latent = run_tiled(encoder.encode, pixels, tile, ENCODE_OVERLAP, 1 / scale, scale)[0].numpy()
    return correct(codec, latent) if corrected else latent


def correct(codec: Codec, latent: np.ndarray) -> np.ndarray:
    """An encoder's `latent` moved by the codec's learned correction; itself where none
    applies."""
    return latent if codec.correction is None else codec.correction.apply_to(latent)
