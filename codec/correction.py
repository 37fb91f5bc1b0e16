"""Learned latent correction: refinement amortized into a small network trained once.

Refinement (`codec.refine`) finds, per image, a latent that the decoder renders closer to the
photo than the encoder's own latent. Much of that move is the same for every photo: the
encoder was not trained to be the decoder's best inverse. `LatentCorrection` learns that
shared part: `z + f(z)`, a few 3×3 convolutions over the latent, trained through the frozen
decoder on photos (`codec.training.correction`). It costs under a millisecond, so the default
effort gets it for free. The result is still a plain SD latent that any SD
decoder reads; the file records the decoder family it was tuned for.

A correction belongs to one encoder and one decoder: its file (`codec.learned_weights`)
records both models' fingerprints. Shipped corrections live in `codec/weights/`.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from .learned_weights import WEIGHTS, LearnedWeights, made_for
from .models import LatentAutoencoder


class LatentCorrection(torch.nn.Module):
    """`z + f(z)` for latents `(B, channels, h, w)`: `depth` 3×3 convolutions, `width` channels
    between them, ReLU after all but the last; the identity until trained."""

    def __init__(self, channels: int = 4, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth counts convolutions and must be at least 2, got {depth}")
        self.channels, self.width, self.depth = channels, width, depth
        sizes = [channels, *[width] * (depth - 1), channels]
        layers: list[torch.nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [torch.nn.Conv2d(n_in, n_out, 3, padding=1), torch.nn.ReLU()]
        self.inner = torch.nn.Sequential(*layers[:-1])
        torch.nn.init.zeros_(self.inner[-1].weight)
        torch.nn.init.zeros_(self.inner[-1].bias)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return latents + self.inner(latents)

    def apply_to(self, latent: np.ndarray) -> np.ndarray:
        """The corrected float32 latent `(channels, h, w)` (run on the CPU in float32)."""
        with torch.inference_mode():
            return self(torch.from_numpy(latent)[None].float())[0].numpy()


def _network(state: dict[str, torch.Tensor], meta: dict[str, str]) -> LatentCorrection:
    """The correction a file's tensors and metadata describe (files without `depth` have 3),
    in inference mode."""
    correction = LatentCorrection(
        int(meta["channels"]), int(meta["width"]), int(meta.get("depth", 3))
    )
    correction.load_state_dict({name: tensor.float() for name, tensor in state.items()})
    return correction.eval().requires_grad_(False)


CORRECTIONS = LearnedWeights(
    format="latent-gallery-correction-1",
    name="latent correction",
    command="python -m codec.training.correction",
    setting="LATENT_GALLERY_CORRECTION",
    folder=WEIGHTS,
    binding=("encoder", "decoder"),
    build=_network,
)


def save_correction(
    correction: LatentCorrection, path: Path, encoder: LatentAutoencoder,
    decoder: LatentAutoencoder, notes: str = "",
) -> None:  # fmt: skip
    """Write `correction` for `encoder` and `decoder` as a safetensors file (atomically)."""
    metadata = {
        "channels": str(correction.channels),
        "width": str(correction.width),
        "depth": str(correction.depth),
        **made_for(encoder=encoder, decoder=decoder),
        "notes": notes,
    }
    CORRECTIONS.save(path, correction.state_dict(), metadata)


def correction_for(
    setting: str, encoder: LatentAutoencoder, decoder: LatentAutoencoder, folder: Path = WEIGHTS
) -> LatentCorrection | None:
    """The correction `LATENT_GALLERY_CORRECTION` asks for: none (`off`), the file in `folder`
    trained for these models if there is one (`auto`), or the file at a path, which must be."""
    return CORRECTIONS.resolve(setting, made_for(encoder=encoder, decoder=decoder), folder)
