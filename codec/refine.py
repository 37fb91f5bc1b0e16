"""Encoder-side refinement (analysis by synthesis): fit the latent to the decoder and quantizer.

Starting from the encoder's latent, Adam steps move the latent so that the target decoder's
image of the *quantized* latent matches the photo. The quantizer is the method's own (forward:
the dequantized latent, `ec`'s fast approximation during the search; backward: identity, a
straight-through estimator). The best iterate and the encoder's own latent are then scored
exactly after quantization and the better one is kept, so refinement never does worse than the
plain encoder on the decoder it targets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

import numpy as np
import torch

from .errors import CodecError
from .methods import QuantizationMethod, ec
from .models import LatentAutoencoder

Dequantizer = Callable[[np.ndarray], np.ndarray]

EFFORT_ENV = "LATENT_GALLERY_EFFORT"
MAX_EFFORT = 9
EFFORT_STEPS = (0, 5, 10, 20, 30, 50, 75, 100, 150, 200)
"""Adam steps at each effort level 0..9 (0: the plain encoder, no refinement)."""
CUDA_DEFAULT_EFFORT = 5
"""What `auto` means on CUDA; elsewhere `auto` is 0 (a decoder step costs seconds on a CPU)."""
LEARNING_RATE = 0.05
"""Adam's initial step in scaled latent units, decayed to zero by a cosine over the run."""


def steps_for(effort: int) -> int:
    """Adam steps of an effort level in 0..MAX_EFFORT."""
    if not 0 <= effort <= MAX_EFFORT:
        raise ValueError(f"effort must be in 0..{MAX_EFFORT}, got {effort}")
    return EFFORT_STEPS[effort]


def resolve_effort(
    effort: int | str | None,
    device: torch.device,
    size: tuple[int, int],
    tile: int,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """The effort for an image of `size` (width, height): as given, else `LATENT_GALLERY_EFFORT`.

    `auto` (the default) is `CUDA_DEFAULT_EFFORT` on CUDA and 0 elsewhere. Refinement works on
    whole images that the decoder decodes in one piece (at most `tile` pixels a side): `auto`
    is 0 for larger ones, and an explicit effort above 0 is a `CodecError`.
    """
    if effort is None:
        effort = environ.get(EFFORT_ENV, "auto")
    fits = max(size) <= tile
    if effort == "auto":
        return CUDA_DEFAULT_EFFORT if device.type == "cuda" and fits else 0
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

    `exact=False` gives `ec`'s cheaper approximation (nearest levels, no RDOQ) for search loops.
    """
    if isinstance(method, ec.EntropyCodedMethod):
        return lambda latent: ec.quantize(latent, quality, rdoq=exact).dequantize()

    def round_trip(latent: np.ndarray) -> np.ndarray:
        compressed = method.compress(latent, quality)
        return method.decompress(compressed.params, compressed.payload, latent.shape)

    return round_trip


def refine(
    images: torch.Tensor,
    latents: np.ndarray,
    decoder: LatentAutoencoder,
    method: QuantizationMethod,
    quality: int,
    steps: int,
    lr: float = LEARNING_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Refined latents `(B, C, h, w)` for files of `method` at `quality`, and their PSNRs (dB).

    `images` `(B, 3, H, W)` in [0, 1] with `H <= 8h`, `W <= 8w` (the padding the encoder added
    is not scored); `latents` the encoder's float latents. The search quantizes each of its
    `steps + 1` iterates (the encoder's latent first) with the fast approximation and keeps the
    best; that one and the encoder's latent are then quantized exactly, and the better of the
    two is returned with its exact PSNR.
    """
    target = images.to(decoder.device, torch.float32)
    best = np.array(latents, dtype=np.float32, copy=True)
    searched = [best]
    if steps:
        approximate = dequantizer(method, quality, exact=False)
        searched.append(_search(best, target, decoder, approximate, steps, lr))
    exact = dequantizer(method, quality)
    with torch.no_grad():
        candidates = torch.from_numpy(np.stack([exact(z) for z in np.concatenate(searched)]))
        out = decoder.decode_differentiable(candidates.to(decoder.device, decoder.dtype))
    scores = _mse(out, target.repeat(len(searched), 1, 1, 1)).reshape(len(searched), -1)
    winner = scores.argmin(axis=0)
    chosen = np.stack([searched[w][i] for i, w in enumerate(winner)])
    return chosen, -10 * np.log10(np.maximum(scores.min(axis=0), 1e-12))


def _mse(decoded: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-image MSE of decoded images (cropped to the target, clamped as a PNG would be)."""
    height, width = target.shape[-2:]
    error = decoded.detach().float()[..., :height, :width].clamp(0, 1) - target
    return error.square().mean(dim=(1, 2, 3)).cpu().numpy()


def _search(
    start: np.ndarray,
    target: torch.Tensor,
    decoder: LatentAutoencoder,
    dequantize: Dequantizer,
    steps: int,
    lr: float,
) -> np.ndarray:
    """Adam through a straight-through quantizer; the best iterate per image under `dequantize`."""
    height, width = target.shape[-2:]
    z = torch.tensor(start, device=target.device, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=lr)
    best, best_mse = start.copy(), np.full(len(start), np.inf)
    for step in range(steps + 1):
        current = z.detach().cpu().numpy()
        quantized = torch.from_numpy(np.stack([dequantize(item) for item in current]))
        straight = z + (quantized.to(z.device) - z).detach()
        with torch.set_grad_enabled(step < steps):
            out = decoder.decode_differentiable(straight.to(decoder.dtype)).float()
        mse = _mse(out, target)
        improved = mse < best_mse
        best[improved], best_mse[improved] = current[improved], mse[improved]
        if step == steps:
            break
        # A sum, not a mean: keeps the gradients far from fp16's underflow on CUDA.
        loss = (out[..., :height, :width] - target).square().sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not torch.isfinite(z.grad).all():
            continue
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.step()
    return best
