"""Image quality against a reference (8-bit RGB): MS-SSIM, SSIMULACRA 2, ColorVideoVDP and the
codec's PSNR."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from pytorch_msssim import ms_ssim as _ms_ssim
from ssimulacra2 import compute_ssimulacra2

from codec.measures import psnr

from .cvvdp import jod


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _same_size(reference: Image.Image, distorted: Image.Image) -> None:
    if reference.size != distorted.size:
        raise ValueError(f"image sizes differ: {reference.size} vs {distorted.size}")


def ms_ssim(reference: Image.Image, distorted: Image.Image) -> float:
    """MS-SSIM (pytorch-msssim, 5 scales, 11-pixel Gaussian window) of 8-bit RGB, in [0, 1]."""
    _same_size(reference, distorted)

    def tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(_rgb(image).astype(np.float32)).permute(2, 0, 1)[None]

    with torch.inference_mode():
        return float(_ms_ssim(tensor(reference), tensor(distorted), data_range=255.0))


def ssimulacra2(reference: Image.Image, distorted: Image.Image) -> float:
    """SSIMULACRA 2 score (the `ssimulacra2` package): 100 = identical, ~70 = good, < 30 = bad."""
    _same_size(reference, distorted)

    def png(image: Image.Image) -> io.BytesIO:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG", compress_level=0)
        buffer.seek(0)
        return buffer

    return float(compute_ssimulacra2(png(reference), png(distorted)))


MEASURES = {"psnr": psnr, "ms_ssim": ms_ssim, "ssimulacra2": ssimulacra2, "cvvdp": jod}


def measure(
    reference: Image.Image, distorted: Image.Image, names: Sequence[str] = tuple(MEASURES)
) -> dict[str, float]:
    """The named quality metrics (all four by default) of a distorted image against its
    reference."""
    return {name: MEASURES[name](reference, distorted) for name in names}
