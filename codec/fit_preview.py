"""Fit the preview map (`codec.preview`) for the configured encoder's latent space on photos.

    python -m codec.fit_preview --images DIR_OR_FILE [...] [--out FILE]

The encoder comes from `LATENT_GALLERY_ENCODER` (and the correction, if one applies, from
`LATENT_GALLERY_DECODER` and `LATENT_GALLERY_CORRECTION`). Each photo (and a half-size copy) is
encoded as an upload is, corrected and coded at the default quality, and the map is fitted by
least squares from the dequantized latent to the photo box-downsampled to the latent's size.
Exit status: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .fitting import fitting_parser, run_fitting
from .pipeline import Codec
from .preview import PREVIEWS, fit_preview, save_preview
from .train_correction import training_pairs


def stored_latents(codec: Codec, paths: Sequence[Path]) -> list[tuple[np.ndarray, torch.Tensor]]:
    """(dequantized latent as a file stores it, photo pixels `(3, H, W)`) per picture: each
    photo and a half-size copy, encoded, corrected and coded as an upload is."""
    pairs = []
    for latent, pixels in training_pairs(paths, codec.encoder, 1):
        height, width = pixels.shape[1:]
        data = codec.pack(codec.correct(latent.numpy()), width, height)
        pairs.append((codec.unpack(data)[1], pixels))
    return pairs


def stored_pairs(codec: Codec, paths: Sequence[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(dequantized latent as a file stores it, photo box-downsampled to its size) per picture."""
    scale = codec.encoder.space.downscale
    return [
        (latent, torch.nn.functional.avg_pool2d(pixels[None], scale)[0].numpy())
        for latent, pixels in stored_latents(codec, paths)
    ]


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.fit_preview`."""
    return fitting_parser("fit_preview", __doc__, f"{PREVIEWS}/<space>.safetensors")


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the photos, fit the map, and write it."""
    args = build_parser().parse_args(argv)

    def fit(codec: Codec, paths: list[Path]) -> str:
        pairs = stored_pairs(codec, paths)
        preview = fit_preview(codec.encoder.space, pairs)
        out = args.out or PREVIEWS / f"{preview.space}.safetensors"
        notes = (
            f"{len(pairs)} pictures (photos and half-size copies), encoder "
            f"{codec.encoder.family} {codec.encoder.encoder_fingerprint.hex()}, "
            f"correction {'on' if codec.correction is not None else 'off'}"
        )
        save_preview(preview, out, notes)
        return f"wrote {out}: {notes}"

    return run_fitting(args.images, fit)


if __name__ == "__main__":
    sys.exit(main())
