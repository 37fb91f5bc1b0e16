"""Train a `LatentCorrection` for the configured encoder and decoder on a set of photos.

    python -m codec.training.correction --images DIR_OR_FILE [...] [--steps 500] [--out FILE]

The models come from `LATENT_GALLERY_ENCODER` / `LATENT_GALLERY_DECODER`. Each photo (and a
half-size copy) is encoded once; each step takes random latent crops, corrects them and
descends the decoder's squared error against the photo, away from crop borders.
Exit status: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..correction import CORRECTIONS, LatentCorrection, save_correction
from ..models import LatentAutoencoder
from ..pipeline import Codec
from .command import run_tool, tool_parser
from .data import encoded_latents, random_crops
from .descent import descend

MARGIN = 4  # latent positions at each crop border left out of the loss


def train(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    decoder: LatentAutoencoder,
    *,
    steps: int = 500,
    width: int = 16,
    depth: int = 3,
    batch: int = 4,
    crop: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> LatentCorrection:
    """A correction fitted to (latent, pixels) `pairs` through `decoder` by Adam with a
    cosine-decayed rate."""
    if crop <= 2 * MARGIN:
        raise ValueError(f"crop must be over {2 * MARGIN} latent positions, got {crop}")
    torch.manual_seed(seed)
    correction = LatentCorrection(decoder.space.channels, width, depth).to(decoder.device)
    if not pairs:
        raise ValueError(f"no training photo is {crop * decoder.space.downscale} pixels a side")
    generator = np.random.default_rng(seed)
    up, m = decoder.space.downscale, MARGIN * decoder.space.downscale

    def loss() -> torch.Tensor:
        latents, photos = random_crops(pairs, batch, crop, up, generator)
        latents, photos = latents.to(decoder.device), photos.to(decoder.device)
        decoded = decoder.decode_differentiable(correction(latents).to(decoder.dtype))
        return torch.mean((decoded.float()[..., m:-m, m:-m] - photos[..., m:-m, m:-m]) ** 2)

    descend(correction.parameters(), loss, steps, lr)
    return correction.cpu().eval().requires_grad_(False)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.training.correction`."""
    parser = tool_parser(CORRECTIONS, __doc__, "<encoder>-<decoder>.safetensors")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--width", type=int, default=16, help="hidden channels")
    parser.add_argument("--depth", type=int, default=3, help="convolutions")
    parser.add_argument("--batch", type=int, default=4, help="crops per step")
    parser.add_argument("--crop", type=int, default=32, help="crop side in latent positions")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the photos, train, and write the correction file."""
    args = build_parser().parse_args(argv)

    def learn(codec: Codec, paths: list[Path]) -> str:
        pairs = encoded_latents(paths, codec.encoder, args.crop)
        correction = train(
            pairs, codec.decoder, steps=args.steps, width=args.width, depth=args.depth,
            batch=args.batch, crop=args.crop, seed=args.seed,
        )  # fmt: skip
        name = f"{codec.encoder.family}-{codec.decoder.family}.safetensors"
        out = args.out or CORRECTIONS.folder / name
        notes = f"{len(pairs)} pictures (photos and half-size copies), {args.steps} steps"
        save_correction(correction, out, codec.encoder, codec.decoder, notes)
        return f"wrote {out}: {notes}"

    return run_tool(args, learn)


if __name__ == "__main__":
    sys.exit(main())
