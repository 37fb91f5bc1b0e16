"""Fine-tune the decoder on the latents our files hold (`codec.decoder_tuning`).

    python -m codec.training.decoder --images DIR_OR_FILE [...] [--steps 1200] [--out FILE]

The models come from `LATENT_GALLERY_ENCODER` / `LATENT_GALLERY_DECODER`; training starts from
the decoder's own weights (any shipped tuning is left off). Each photo is downscaled to each
of `--sizes` (long side), encoded, corrected and coded by the configured method at a quality
drawn from `--qualities`, as an upload is. Each step decodes random crops of those stored
latents and descends L1 + MS_SSIM_WEIGHT × (1 − MS-SSIM) against the photo, away from the crop
borders, in the precision renders decode in (bfloat16 autocast where the CPU has it).
Exit status: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ms_ssim

from ..decoder_tuning import DECODER_TUNINGS, save_tuning
from ..hardware import detect, fast_dtype
from ..models import LatentAutoencoder
from ..pipeline import Codec
from .command import run_tool, tool_parser
from .data import coded_latents, random_crops
from .descent import descend

MARGIN = 4
"""Latent positions at each crop border left out of the loss."""
MS_SSIM_WEIGHT = 0.2
"""Weight of the MS-SSIM term against the L1 one (both near 0.03 on a stored photo)."""
SIZES = (768, 1536)
QUALITIES = (40, 55, 65, 75, 75, 85, 95)
"""Drawn per picture: the default quality twice as often as the others."""


def train(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    decoder: LatentAutoencoder,
    *,
    steps: int = 1200,
    batch: int = 4,
    crop: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
) -> LatentAutoencoder:
    """A float32 copy of `decoder` fine-tuned on (stored latent, pixels) `pairs` by Adam with a
    cosine-decayed rate, in inference mode."""
    side = (crop - 2 * MARGIN) * decoder.space.downscale
    if side <= 160:
        raise ValueError(f"crop must be over {2 * MARGIN + 160 // decoder.space.downscale} latents")
    pairs = [(z, p) for z, p in pairs if min(z.shape[-2:]) >= crop]
    if not pairs:
        raise ValueError(f"no training photo is {crop * decoder.space.downscale} pixels a side")
    torch.manual_seed(seed)
    tuned = decoder.copy(torch.float32)
    layers = [p for n, p in tuned.module.named_parameters() if n.startswith(tuned.decoder_prefixes)]
    for parameter in layers:
        parameter.requires_grad_(True)
    autocast = fast_dtype(detect(tuned.device), torch.float32)
    generator = np.random.default_rng(seed)
    up, m = decoder.space.downscale, MARGIN * decoder.space.downscale

    def loss() -> torch.Tensor:
        latents, photos = random_crops(pairs, batch, crop, up, generator)
        latents = latents.to(tuned.device, memory_format=torch.channels_last)
        photos = photos.to(tuned.device)[..., m:-m, m:-m]
        with torch.autocast(tuned.device.type, autocast, enabled=autocast != torch.float32):
            decoded = tuned.decode_differentiable(latents)
        decoded = decoded.float()[..., m:-m, m:-m]
        similarity = ms_ssim(decoded.clamp(0, 1), photos, data_range=1.0)
        return (decoded - photos).abs().mean() + MS_SSIM_WEIGHT * (1 - similarity)

    descend(layers, loss, steps, lr, shown=lambda value: f"{value:.4f}")
    tuned.module.eval().requires_grad_(False)
    return tuned


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.training.decoder`."""
    parser = tool_parser(DECODER_TUNINGS, __doc__, "<decoder>.safetensors")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=4, help="crops per step")
    parser.add_argument("--crop", type=int, default=32, help="crop side in latent positions")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam's starting rate")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                        help="long sides each photo is coded at")  # fmt: skip
    parser.add_argument("--qualities", type=int, nargs="+", default=QUALITIES,
                        help="qualities each picture's is drawn from")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Code the photos, fine-tune, and write the tuning file."""
    args = build_parser().parse_args(argv)

    def learn(codec: Codec, paths: list[Path]) -> str:
        generator = np.random.default_rng(args.seed)
        pairs = coded_latents(codec, paths, args.sizes, args.qualities, generator)
        tuned = train(
            pairs, codec.decoder, steps=args.steps, batch=args.batch, crop=args.crop,
            lr=args.lr, seed=args.seed,
        )  # fmt: skip
        out = args.out or DECODER_TUNINGS.folder / f"{codec.decoder.family}.safetensors"
        notes = (
            f"{len(pairs)} pictures ({len(paths)} photos at long sides {args.sizes}), "
            f"qualities {args.qualities}, {args.steps} steps of {args.batch}"
        )
        save_tuning(tuned, out, notes)
        return f"wrote {out}: {notes}"

    return run_tool(args, learn, decoder_tuning="off")


if __name__ == "__main__":
    sys.exit(main())
