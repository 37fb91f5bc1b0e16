"""Encoder-side refinement (analysis by synthesis): fit the latent to the decoder and quantizer.

Starting from the encoder's latent, Adam steps move the latent so that the target decoder's
image of the *quantized* latent matches the photo. The quantizer is the method's own (forward:
the dequantized latent, the method's fast approximation during the search; backward: identity,
a straight-through estimator). The encoder's own latent, the last iterate and the best one scored
on the way are then scored exactly after quantization and the best is kept, so refinement never
does worse than the plain encoder on the model it searches on. Searching and scoring run on the
search model the caller gives, held exclusively for the whole search: the decoder itself, its
twin in the precision that `codec.plan` measured fastest, or a proxy that decodes at a
smaller scale (`pixel_scale`), scored against the photo box-downsampled to that scale (then
"never worse" holds as the proxy scores it, not necessarily for the decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CodecError
from .methods import QuantizationMethod
from .models import LatentAutoencoder
from .settings import MAX_EFFORT

Dequantizer = Callable[[np.ndarray], np.ndarray]

EFFORT_STEPS = (0, 1, 5, 20, 30, 50, 75, 100, 150, 200)
"""Adam steps at each effort level 0..9 (0: the plain encoder, no refinement)."""
LEARNING_RATE = 0.05
"""Adam's initial step in scaled latent units, decayed to zero by a cosine over the run."""


def steps_for(effort: int) -> int:
    """Adam steps of an effort level in 0..MAX_EFFORT."""
    if not 0 <= effort <= MAX_EFFORT:
        raise ValueError(f"effort must be in 0..{MAX_EFFORT}, got {effort}")
    return EFFORT_STEPS[effort]


def resolve_effort(
    effort: int | str,
    size: tuple[int, int],
    tile: int,
    auto: Callable[[], int],
) -> int:
    """The effort (`auto` or 0..9) for an image of `size` (width, height).

    `auto` gives what `auto` means on this machine (`codec.plan.choose_plan`), asked only
    when needed. Refinement works on whole images that the decoder decodes in one piece (at
    most `tile` pixels a side): `auto` is 0 for larger ones, and an explicit effort above 0 is
    a `CodecError`.
    """
    fits = max(size) <= tile
    if effort == "auto":
        return auto() if fits else 0
    try:
        value = int(effort)
    except ValueError:
        raise ValueError(f"effort {effort!r} is neither auto nor an integer") from None
    steps_for(value)
    if value and not fits:
        raise CodecError(
            f"effort {value} refines images of at most {tile}x{tile} pixels (LATENT_GALLERY_TILE); "
            f"this one is {size[0]}x{size[1]}: use effort 0"
        )
    return value


def dequantizer(method: QuantizationMethod, quality: int, exact: bool = True) -> Dequantizer:
    """The latent a file of `method` at `quality` holds for a given float latent.

    `exact=False` gives the method's cheaper approximation, if it has one, for search loops
    (`QuantizationMethod.round_trip`).
    """
    return lambda latent: method.round_trip(latent, quality, exact)


@dataclass(frozen=True)
class Refined:
    """What `refine` chose: latents `(B, C, h, w)`, their PSNRs (dB) and decoded images."""

    latents: np.ndarray
    psnr: np.ndarray
    images: torch.Tensor
    """`(B, 3, H, W)` float32 on the CPU, clamped to [0, 1] and cropped to the photo: the
    search model's image of each chosen latent after exact quantization (a proxy's: at its
    `pixel_scale`)."""


def refine(
    images: torch.Tensor,
    latents: np.ndarray,
    decoder: LatentAutoencoder,
    method: QuantizationMethod,
    quality: int,
    steps: int,
    lr: float = LEARNING_RATE,
) -> Refined:
    """Refined latents for files of `method` at `quality`, their PSNRs and decoded images.

    `images` `(B, 3, H, W)` in [0, 1] with `H <= 8h`, `W <= 8w` (the padding the encoder added
    is not scored); `latents` the encoder's float latents. The search takes `steps` Adam steps,
    the first from the exactly quantized latent (which scores it), the others through the fast
    quantizer; the last iterate and (with two steps or more) the best one scored on the way are
    then quantized exactly and decoded in one batch. The best of these and the encoder's latent
    is returned, as `decoder` (the search model) scores and decodes it: at its `pixel_scale`,
    against `images` box-downsampled to that scale.
    """
    with decoder.exclusive():
        target = _shrink(images.to(decoder.device, torch.float32), decoder.pixel_scale)
        start = np.array(latents, dtype=np.float32, copy=True)
        exact = dequantizer(method, quality)
        searched, scored, decoded = [start], [], []
        if steps:
            approximate = dequantizer(method, quality, exact=False)
            start_mse, start_image, later = _search(
                start, target, decoder, (exact, approximate), steps, lr
            )
            searched, scored, decoded = [start, *later], [start_mse], [start_image]
        with torch.no_grad():
            pending = np.concatenate(searched[len(scored) :])
            candidates = torch.from_numpy(np.stack([exact(z) for z in pending]))
            out = decoder.decode_differentiable(candidates.to(decoder.device, decoder.dtype))
        out = _crop(out, target)
        mse = _mse(out, target.repeat(len(searched) - len(scored), 1, 1, 1))
        scores = np.concatenate([*scored, mse]).reshape(len(searched), -1)
        pictures = torch.cat([*decoded, out.cpu()])
        pictures = pictures.reshape(len(searched), len(start), *out.shape[1:])
        winner = scores.argmin(axis=0)
        rows = range(len(start))
        return Refined(
            latents=np.stack([searched[w][i] for i, w in zip(rows, winner, strict=True)]),
            psnr=-10 * np.log10(np.maximum(scores.min(axis=0), 1e-12)),
            images=torch.stack([pictures[w, i] for i, w in zip(rows, winner, strict=True)]),
        )


def _shrink(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Images box-downsampled `scale` times (a partial last row or column of boxes averages
    the pixels it has)."""
    return images if scale == 1 else F.avg_pool2d(images, scale, ceil_mode=True)


def _crop(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Decoded images as a PNG would hold them: float32, cropped to the target, clamped."""
    height, width = target.shape[-2:]
    return decoded.detach().float()[..., :height, :width].clamp(0, 1)


def _mse(decoded: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-image MSE of `_crop`ped decoded images against the target."""
    return (decoded - target).square().mean(dim=(1, 2, 3)).cpu().numpy()


def _search(
    start: np.ndarray,
    target: torch.Tensor,
    decoder: LatentAutoencoder,
    quantizers: tuple[Dequantizer, Dequantizer],
    steps: int,
    lr: float,
) -> tuple[np.ndarray, torch.Tensor, list[np.ndarray]]:
    """Adam through a straight-through quantizer (`quantizers`: exact for the first step, fast
    after). Returns the start's exact MSE per image and its decoded images, and the later
    iterates worth scoring exactly: the best per image of those after the first as the fast
    quantizer scores them (with two steps or more), and the last, which no step scored."""
    height, width = target.shape[-2:]
    z = torch.tensor(start, device=target.device, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=lr)
    best, best_mse = start.copy(), np.full(len(start), np.inf)
    for step in range(steps):
        current = z.detach().cpu().numpy()
        dequantize = quantizers[min(step, 1)]
        quantized = torch.from_numpy(np.stack([dequantize(item) for item in current]))
        straight = z + (quantized.to(z.device) - z).detach()
        out = decoder.decode_differentiable(straight.to(decoder.dtype)).float()
        image = _crop(out, target)
        mse = _mse(image, target)
        if step:
            improved = mse < best_mse
            best[improved], best_mse[improved] = current[improved], mse[improved]
        else:
            start_mse, start_image = mse, image.cpu()
        # A sum, not a mean: keeps the gradients far from fp16's underflow on CUDA.
        loss = (out[..., :height, :width] - target).square().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not torch.isfinite(z.grad).all():
            continue
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.step()
    last = z.detach().cpu().numpy()
    return start_mse, start_image, ([best, last] if steps > 1 else [last])
