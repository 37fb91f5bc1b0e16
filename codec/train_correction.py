"""Train a `LatentCorrection` for the configured encoder and decoder on a set of photos.

    python -m codec.train_correction --images DIR_OR_FILE [...] [--steps 500] [--out FILE]

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
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .correction import WEIGHTS, LatentCorrection, save_correction
from .fitting import descend, fitting_parser, run_fitting
from .images import image_to_tensor
from .models import LatentAutoencoder
from .pipeline import Codec

SCALES = (1.0, 0.5)
MARGIN = 4  # latent positions at each crop border left out of the loss


def training_pairs(
    paths: Sequence[Path], encoder: LatentAutoencoder, crop: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(latent, pixels) of each photo at each of `SCALES` that holds a `crop`-latent square.

    Files that are not readable images are skipped with a line on stderr.
    """
    downscale = encoder.space.downscale
    pairs = []
    for path in tqdm(paths, desc="encoding", unit="photo", file=sys.stderr):
        try:
            photo = Image.open(path).convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
            continue
        for scale in SCALES:
            w, h = (int(side * scale) // downscale * downscale for side in photo.size)
            if min(w, h) < crop * downscale:
                continue
            pixels = image_to_tensor(photo.resize((w, h), Image.LANCZOS) if scale != 1 else
                                     photo.crop((0, 0, w, h)))  # fmt: skip
            pairs.append((encoder.encode(pixels)[0], pixels[0]))
    return pairs


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
    """A correction fitted to `pairs` through `decoder` by Adam with a cosine-decayed rate."""
    if crop <= 2 * MARGIN:
        raise ValueError(f"crop must be over {2 * MARGIN} latent positions, got {crop}")
    torch.manual_seed(seed)
    correction = LatentCorrection(decoder.space.channels, width, depth).to(decoder.device)
    if not pairs:
        raise ValueError(f"no training photo is {crop * decoder.space.downscale} pixels a side")
    generator = np.random.default_rng(seed)
    up, m = decoder.space.downscale, MARGIN * decoder.space.downscale

    def loss() -> torch.Tensor:
        latents, photos = [], []
        for index in generator.integers(len(pairs), size=batch):
            latent, pixels = pairs[index]
            y = generator.integers(latent.shape[1] - crop + 1)
            x = generator.integers(latent.shape[2] - crop + 1)
            latents.append(latent[:, y : y + crop, x : x + crop])
            photos.append(pixels[:, y * up : (y + crop) * up, x * up : (x + crop) * up])
        latents = torch.stack(latents).to(decoder.device)
        photos = torch.stack(photos).to(decoder.device)
        decoded = decoder.decode_differentiable(correction(latents).to(decoder.dtype))
        return torch.mean((decoded.float()[..., m:-m, m:-m] - photos[..., m:-m, m:-m]) ** 2)

    descend(correction.parameters(), loss, steps, lr)
    return correction.cpu().eval().requires_grad_(False)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.train_correction`."""
    parser = fitting_parser(
        "train_correction", __doc__, f"{WEIGHTS}/<encoder>-<decoder>.safetensors"
    )
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

    def fit(codec: Codec, paths: list[Path]) -> str:
        pairs = training_pairs(paths, codec.encoder, args.crop)
        correction = train(
            pairs, codec.decoder, steps=args.steps, width=args.width, depth=args.depth,
            batch=args.batch, crop=args.crop, seed=args.seed,
        )  # fmt: skip
        out = args.out or WEIGHTS / f"{codec.encoder.family}-{codec.decoder.family}.safetensors"
        notes = f"{len(pairs)} pictures (photos and half-size copies), {args.steps} steps"
        save_correction(correction, out, codec.encoder, codec.decoder, notes)
        return f"wrote {out}: {notes}"

    return run_fitting(args.images, fit)


if __name__ == "__main__":
    sys.exit(main())
