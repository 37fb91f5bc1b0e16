"""Fine-tune the thumbnail decoder's last stage (`codec.thumbnail_decoder`) on photos.

    python -m codec.train_thumbnail_decoder --images DIR_OR_FILE [...] [--steps 1500] [--out FILE]

The models come from `LATENT_GALLERY_ENCODER` / `LATENT_GALLERY_DECODER`. Each photo (and a
half-size copy) is encoded and coded as an upload is; the input is the decoder's half-scale
features of that stored latent, the target its full decode box-downsampled 2×. Each step takes
random crops and descends the stage's squared error, away from the crop borders, starting from
the decoder's own last stage.
Exit status: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .fit_preview import stored_latents
from .fitting import descend, fitting_parser, run_fitting
from .models import LatentAutoencoder
from .pipeline import Codec
from .thumbnail_decoder import THUMBNAIL_DECODERS, save_stage

MARGIN = 4  # half-scale pixels at each crop border left out of the loss


def distillation_pairs(
    codec: Codec, paths: Sequence[Path]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(half-scale features, full decode box-downsampled 2×) of each stored picture, float32
    on the decoder's device."""
    decoder = codec.decoder
    pairs = []
    for latent, _ in stored_latents(codec, paths):
        z = torch.from_numpy(latent)[None]
        target = torch.nn.functional.avg_pool2d(decoder.decode(z), 2)[0]
        with decoder.exclusive(), torch.inference_mode():
            features = decoder.half_scale_features(z.to(decoder.device, decoder.dtype))[0]
        pairs.append((features.float().clone(), target.to(decoder.device)))
    return pairs


def train(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    decoder: LatentAutoencoder,
    *,
    steps: int = 1500,
    batch: int = 8,
    crop: int = 64,
    lr: float = 3e-4,
    seed: int = 0,
) -> torch.nn.Module:
    """The decoder's last stage, float32, fine-tuned on `pairs` by Adam, cosine-decayed rate."""
    if crop <= 2 * MARGIN:
        raise ValueError(f"crop must be over {2 * MARGIN} pixels, got {crop}")
    pairs = [(f, t) for f, t in pairs if min(f.shape[-2:]) >= crop]
    if not pairs:
        raise ValueError(f"no training photo is {4 * crop} pixels a side")
    torch.manual_seed(seed)
    stage = copy.deepcopy(decoder.last_stage()).float().train().requires_grad_(True)
    generator = np.random.default_rng(seed)
    m = MARGIN

    def loss() -> torch.Tensor:
        inputs, targets = [], []
        for index in generator.integers(len(pairs), size=batch):
            features, target = pairs[index]
            y = generator.integers(features.shape[1] - crop + 1)
            x = generator.integers(features.shape[2] - crop + 1)
            inputs.append(features[:, y : y + crop, x : x + crop])
            targets.append(target[:, y : y + crop, x : x + crop])
        out = stage(torch.stack(inputs))
        return torch.mean((out[..., m:-m, m:-m] - torch.stack(targets)[..., m:-m, m:-m]) ** 2)

    descend(stage.parameters(), loss, steps, lr)
    return stage.eval().requires_grad_(False)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.train_thumbnail_decoder`."""
    parser = fitting_parser(
        "train_thumbnail_decoder", __doc__, f"{THUMBNAIL_DECODERS}/<decoder>.safetensors"
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--crop", type=int, default=64, help="crop side in half-scale pixels")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam's starting rate")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the photos, fine-tune, and write the stage file."""
    args = build_parser().parse_args(argv)

    def fit(codec: Codec, paths: list[Path]) -> str:
        pairs = distillation_pairs(codec, paths)
        stage = train(
            pairs, codec.decoder, steps=args.steps, batch=args.batch, crop=args.crop,
            lr=args.lr, seed=args.seed,
        )  # fmt: skip
        out = args.out or THUMBNAIL_DECODERS / f"{codec.decoder.family}.safetensors"
        notes = f"{len(pairs)} pictures (photos and half-size copies), {args.steps} steps"
        save_stage(stage, out, codec.decoder, notes)
        return f"wrote {out}: {notes}"

    return run_fitting(args.images, fit)


if __name__ == "__main__":
    sys.exit(main())
