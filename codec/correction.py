"""Learned latent correction: refinement amortized into a small network trained once.

Refinement (`codec.refine`) finds, per image, a latent that the decoder renders closer to the
photo than the encoder's own latent. Much of that move is the same for every photo: the
encoder was not trained to be the decoder's best inverse. `LatentCorrection` learns that
shared part: `z + f(z)`, a few 3×3 convolutions over the latent, trained through the frozen
decoder on photos (`codec.train_correction`). It costs under a millisecond, so the default
effort gets it for free. The result is still a plain SD latent that any SD
decoder reads; the file records the decoder family it was tuned for.

A correction belongs to one encoder and one decoder: its file records both models'
fingerprints, taken at bfloat16 precision, so a float32 release of the same weights and its
bfloat16 re-save both match. Shipped corrections live in `codec/weights/`.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .atomic import atomic_write
from .errors import ModelLoadError
from .models import LatentAutoencoder

WEIGHTS = Path(__file__).resolve().parent / "weights"
FORMAT = "latent-gallery-correction-1"


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


def save_correction(
    correction: LatentCorrection, path: Path, encoder: LatentAutoencoder,
    decoder: LatentAutoencoder, notes: str = "",
) -> None:  # fmt: skip
    """Write `correction` for `encoder` and `decoder` as a safetensors file (atomically)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in correction.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "channels": str(correction.channels),
        "width": str(correction.width),
        "depth": str(correction.depth),
        "encoder": encoder.rounded_fingerprints[0].hex(),
        "decoder": decoder.rounded_fingerprints[1].hex(),
        "notes": notes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(tensors, metadata=metadata))


def read_correction(path: Path) -> tuple[LatentCorrection, tuple[str, str]]:
    """A correction file's network and the (encoder, decoder) fingerprints it was trained for."""
    try:
        with safe_open(str(path), "pt") as file:
            meta = file.metadata() or {}
            names = file.keys()
            state = {name: file.get_tensor(name).float() for name in names}
        if meta.get("format") != FORMAT:
            raise ValueError("no correction metadata")
        correction = LatentCorrection(
            int(meta["channels"]), int(meta["width"]), int(meta.get("depth", 3))
        )
        correction.load_state_dict(state)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise ModelLoadError(
            f"{path}: not a latent correction file ({error}); write one with "
            "python -m codec.train_correction, or set LATENT_GALLERY_CORRECTION=auto or off"
        ) from None
    return correction.eval().requires_grad_(False), (meta["encoder"], meta["decoder"])


def correction_for(
    setting: str, encoder: LatentAutoencoder, decoder: LatentAutoencoder, folder: Path = WEIGHTS
) -> LatentCorrection | None:
    """The correction `LATENT_GALLERY_CORRECTION` asks for: none (`off`), the file in `folder`
    trained for these models if there is one (`auto`), or the file at a path, which must be."""
    if setting == "off":
        return None
    wanted = (encoder.rounded_fingerprints[0].hex(), decoder.rounded_fingerprints[1].hex())
    if setting != "auto":
        correction, trained_for = read_correction(Path(setting))
        if trained_for != wanted:
            raise ModelLoadError(
                f"{setting} was trained for other models (encoder {trained_for[0]}, decoder "
                f"{trained_for[1]}; these are {wanted[0]}, {wanted[1]}): train one for them "
                "with python -m codec.train_correction, or set LATENT_GALLERY_CORRECTION=auto"
            )
        return correction
    for path in sorted(folder.glob("*.safetensors")):
        correction, trained_for = read_correction(path)
        if trained_for == wanted:
            return correction
    return None
