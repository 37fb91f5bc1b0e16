"""ColorVideoVDP (the `cvvdp` package) on still 8-bit sRGB images, on the CPU, offline.

ColorVideoVDP models the visibility of differences on a given display and reports JOD (just
objectionable differences): 10 = no visible difference, each unit lower = one more JOD.
`DISPLAY` is its 'standard_fhd' model: a 24-inch Full HD monitor, 200 cd/m², office light,
seen from twice its height (about 38 pixels per degree). The gallery shows images at 100%, one
image pixel per display pixel, and that is the common desktop monitor; its 4K model
('standard_4k', ~77 pixels per degree) halves each pixel's angle and hides half the artifacts.

`pycvvdp` imports `torchvision` at module level, whose PyPI wheels are CUDA builds that do not
import beside torch+cpu (nor leave `diffusers` importable once installed). The two names it
takes are swapped in while it imports: a Gaussian blur (the one it uses on images) written here,
and the MLP of its learned variants, which are not used.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DISPLAY = "standard_fhd"


class GaussianBlur(torch.nn.Module):
    """`torchvision.transforms.GaussianBlur(kernel_size, sigma)` with a fixed sigma, on float
    `(N, C, H, W)` tensors: a sampled, normalized Gaussian, borders reflected."""

    def __init__(self, kernel_size: int, sigma: float) -> None:
        super().__init__()
        half = (kernel_size - 1) / 2
        taps = torch.exp(-0.5 * (torch.linspace(-half, half, kernel_size) / sigma) ** 2)
        self.kernel = torch.outer(taps, taps) / taps.sum() ** 2
        self.pad = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[-3]
        weight = self.kernel.to(x).expand(channels, 1, -1, -1)
        return F.conv2d(F.pad(x, [self.pad] * 4, mode="reflect"), weight, groups=channels)


class _LearnedVariantsOnly(torch.nn.Module):
    """Stands in for `torchvision.ops.MLP`, used only by cvvdp's learned variants."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("cvvdp's learned variants need torchvision")


@contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    """`torchvision.transforms.GaussianBlur` and `torchvision.ops.MLP` while in the block."""
    root = types.ModuleType("torchvision")
    root.transforms = types.SimpleNamespace(GaussianBlur=GaussianBlur)
    root.ops = types.SimpleNamespace(MLP=_LearnedVariantsOnly)
    modules = {"torchvision": root, "torchvision.transforms": root.transforms,
               "torchvision.ops": root.ops}  # fmt: skip
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


@cache
def _metric():
    with _torchvision_stand_in():
        import pycvvdp
    return pycvvdp.cvvdp(display_name=DISPLAY, device=torch.device("cpu"), quiet=True)


def jod(reference: Image.Image, distorted: Image.Image) -> float:
    """ColorVideoVDP JOD of `distorted` against `reference` (same size) on `DISPLAY`."""
    if reference.size != distorted.size:
        raise ValueError(f"image sizes differ: {reference.size} vs {distorted.size}")

    def pixels(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(image.convert("RGB")))

    with torch.inference_mode():
        value, _ = _metric().predict(pixels(distorted), pixels(reference), dim_order="HWC")
    return float(value)
