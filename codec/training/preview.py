"""Fit the preview map (`codec.preview`) for the configured encoder's latent space on photos.

    python -m codec.training.preview --images DIR_OR_FILE [...] [--out FILE]

The encoder comes from `LATENT_GALLERY_ENCODER` (and the correction, if one applies, from
`LATENT_GALLERY_DECODER` and `LATENT_GALLERY_CORRECTION`). Each photo (and a half-size copy) is
encoded as an upload is, corrected and coded at the default quality, and the map is fitted by
least squares from the dequantized latent to the photo box-downsampled to the latent's size.
Exit status: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..pipeline import Codec
from ..preview import PREVIEWS, PreviewMap, features, save_preview
from ..spaces import LatentSpace
from .command import run_tool, tool_parser
from .data import stored_latents


def stored_pairs(codec: Codec, paths: Sequence[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(dequantized latent as a file stores it, photo box-downsampled to its size) per picture."""
    scale = codec.encoder.space.downscale
    return [
        (latent, torch.nn.functional.avg_pool2d(pixels[None], scale)[0].numpy())
        for latent, pixels in stored_latents(codec, paths)
    ]


def fit(space: LatentSpace, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> PreviewMap:
    """The least-squares map of latents `(channels, h, w)` of `space` to RGB targets
    `(3, h, w)` in [0, 1] (photos box-downsampled to the latent's size)."""
    rows, targets = [], []
    for latent, rgb in pairs:
        if latent.shape[0] != space.channels:
            raise ValueError(
                f"latents have {latent.shape[0]} channels, {space.name} has {space.channels}"
            )
        inputs = features(latent)
        rows.append(inputs.reshape(len(inputs), -1).T)
        targets.append(rgb.reshape(3, -1).T)
    if not rows:
        raise ValueError("no pictures to fit a preview map on")
    x = np.concatenate(rows).astype(np.float64)
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(x, np.concatenate(targets).astype(np.float64), rcond=None)
    weight, bias = solution[:-1].T.astype(np.float32), solution[-1].astype(np.float32)
    return PreviewMap(space.name, space.channels, weight, bias)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m codec.training.preview`."""
    return tool_parser(PREVIEWS, __doc__, "<space>.safetensors")


def main(argv: Sequence[str] | None = None) -> int:
    """Encode the photos, fit the map, and write it."""
    args = build_parser().parse_args(argv)

    def learn(codec: Codec, paths: list[Path]) -> str:
        pairs = stored_pairs(codec, paths)
        preview = fit(codec.encoder.space, pairs)
        out = args.out or PREVIEWS.folder / f"{preview.space}.safetensors"
        notes = (
            f"{len(pairs)} pictures (photos and half-size copies), encoder "
            f"{codec.encoder.family} {codec.encoder.encoder_fingerprint.hex()}, "
            f"correction {'on' if codec.correction is not None else 'off'}"
        )
        save_preview(preview, out, notes)
        return f"wrote {out}: {notes}"

    return run_tool(args, learn)


if __name__ == "__main__":
    sys.exit(main())
