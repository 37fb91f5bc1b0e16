"""Fine-tune the thumbnail decoder (`codec.thumbnail_decoder`) on photos.

    python -m codec.training.thumbnail_decoder --images DIR_OR_FILE [...] [--steps 3000]
                                               [--out FILE]

The models come from `LATENT_GALLERY_ENCODER` / `LATENT_GALLERY_DECODER`. Each photo (and a
half-size copy) is encoded and coded as an upload is; the input is the decoder's 1/4-scale
features of that stored latent, the target its full decode resized (bicubic, antialiased) to
a scale drawn per step: 1/2 for a quarter of the steps, else log-uniformly from 1/6 to 1/2.
Each step takes random crops and descends the squared error of the layers after the features,
away from the crop borders, starting from the decoder's own weights.
Exit status: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..pipeline import Codec
from ..thumbnail_decoder import THUMBNAIL_DECODERS, ThumbnailDecoder, resize, save_decoder
from .command import run_tool, tool_parser
from .data import random_crops, stored_latents
from .descent import descend

MARGIN = 6  # thumbnail pixels at each crop border left out of the loss
SCALES = (1 / 6, 1 / 2)  # the range each step's scale is drawn from
AT_HALF = 0.25
"""The share of steps at scale 1/2, the edge of the range: every thumbnail of a 512-px-wide
image, and the worst scale after 2000 steps drawn from the range alone (4 Kodak portraits
−0.4 to −0.6 dB from the full decode's thumbnail, the mean −0.2 dB)."""


def distillation_pairs(
    codec: Codec, paths: Sequence[Path], thumbnails: ThumbnailDecoder
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(1/4-scale features, full decode) of each stored picture, float32 on the CPU."""
    pairs = []
    for latent, _ in stored_latents(codec, paths):
        z = torch.from_numpy(latent)[None]
        features = thumbnails.model.run(thumbnails.features, z)[0]
        pairs.append((features, codec.decoder.decode(z)[0]))
    return pairs


def train(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    thumbnails: ThumbnailDecoder,
    *,
    steps: int = 3000,
    batch: int = 8,
    crop: int = 48,
    lr: float = 2e-4,
    seed: int = 0,
) -> None:
    """Fine-tune `thumbnails`' layers after the features, in float32, on `pairs` by Adam with
    a cosine-decayed rate (in place; they end in the model's dtype, inference mode)."""
    factor = thumbnails.FEATURE_SCALE
    if crop * factor * SCALES[0] <= 2 * MARGIN:
        raise ValueError(f"crop must be over {2 * MARGIN / (factor * SCALES[0]):g} features")
    pairs = [(f, t) for f, t in pairs if min(f.shape[-2:]) >= crop]
    if not pairs:
        raise ValueError(f"no training photo is {factor * crop} pixels a side")
    torch.manual_seed(seed)
    stage = thumbnails.stage.float().train().requires_grad_(True)
    generator = np.random.default_rng(seed)
    m, device = MARGIN, thumbnails.model.device
    low, high = np.log(SCALES)

    def loss() -> torch.Tensor:
        at_half = generator.uniform() < AT_HALF
        scale = SCALES[1] if at_half else float(np.exp(generator.uniform(low, high)))
        inputs, targets = random_crops(pairs, batch, crop, factor, generator)
        out = thumbnails.render(
            inputs.to(device, memory_format=torch.channels_last), (scale, scale)
        )
        wanted = resize(targets.to(device), (scale, scale), "bicubic")
        h, w = wanted.shape[-2:]
        return torch.mean((out[..., m : h - m, m : w - m] - wanted[..., m:-m, m:-m]) ** 2)

    descend(stage.parameters(), loss, steps, lr)
    stage.to(thumbnails.model.dtype).eval().requires_grad_(False)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.training.thumbnail_decoder`."""
    parser = tool_parser(THUMBNAIL_DECODERS, __doc__, "<decoder>.safetensors")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--crop", type=int, default=48, help="crop side in 1/4-scale features")
    parser.add_argument("--lr", type=float, default=2e-4, help="Adam's starting rate")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the photos, fine-tune, and write the thumbnail decoder's file."""
    args = build_parser().parse_args(argv)

    def learn(codec: Codec, paths: list[Path]) -> str:
        thumbnails = ThumbnailDecoder(codec.decoder)
        pairs = distillation_pairs(codec, paths, thumbnails)
        train(
            pairs, thumbnails, steps=args.steps, batch=args.batch, crop=args.crop,
            lr=args.lr, seed=args.seed,
        )  # fmt: skip
        out = args.out or THUMBNAIL_DECODERS.folder / f"{codec.decoder.family}.safetensors"
        notes = f"{len(pairs)} pictures (photos and half-size copies), {args.steps} steps"
        save_decoder(thumbnails, out, notes)
        return f"wrote {out}: {notes}"

    return run_tool(args, learn)


if __name__ == "__main__":
    sys.exit(main())
