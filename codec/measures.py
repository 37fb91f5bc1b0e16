"""What an encode costs and keeps: bits per pixel of its file, PSNR of its image."""

from __future__ import annotations

import numpy as np
from PIL import Image


def bits_per_pixel(n_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of `n_bytes` of file for a `width` x `height` image."""
    return 8 * n_bytes / (width * height)


def psnr(reference: Image.Image, decoded: Image.Image) -> float:
    """PSNR (dB) of an 8-bit RGB image against the reference (inf if identical); `ValueError`
    if their sizes differ."""
    if reference.size != decoded.size:
        raise ValueError(f"image sizes differ: {reference.size} vs {decoded.size}")
    a = np.asarray(reference.convert("RGB"), dtype=np.float64)
    b = np.asarray(decoded.convert("RGB"), dtype=np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))
