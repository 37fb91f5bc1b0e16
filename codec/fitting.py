"""What the tools that learn weights from photos (`train_correction`, `fit_preview`,
`train_thumbnail_decoder`) share: their command line (`--images` and `--out`, the codec from
the environment, exit statuses 0 written, 2 no photos, 1 a codec or value error, each error one
line on stderr) and the gradient descent of the two that train."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from .errors import CodecError
from .pipeline import Codec

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}


def photo_paths(sources: Sequence[Path]) -> list[Path]:
    """The image files named in `sources`, folders expanded (sorted), in order."""
    paths = []
    for source in sources:
        if source.is_dir():
            paths += sorted(p for p in source.iterdir() if p.suffix.lower() in SUFFIXES)
        else:
            paths.append(source)
    return paths


def fitting_parser(module: str, doc: str, out_default: str) -> argparse.ArgumentParser:
    """The parser of `python -m codec.<module>` (described by the first line of `doc`) with
    `--images` and `--out`; the tool adds its own options."""
    parser = argparse.ArgumentParser(
        prog=f"python -m codec.{module}", description=doc.split("\n")[0]
    )
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help="photos, or folders of photos, to learn from")  # fmt: skip
    parser.add_argument("--out", type=Path, help=f"default: {out_default}")
    return parser


def run_fitting(images: Sequence[Path], fit: Callable[[Codec, list[Path]], str]) -> int:
    """A tool's exit status: `fit(codec, photos)` learns, writes its file and returns the line
    to print; no photos in `images` is 2, a `CodecError` or `ValueError` 1."""
    paths = photo_paths(images)
    if not paths:
        print("error: no images found in --images", file=sys.stderr)
        return 2
    try:
        message = fit(Codec.from_env(), paths)
    except (CodecError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0


def descend(
    parameters: Iterable[torch.nn.Parameter],
    loss: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
) -> None:
    """`steps` Adam steps on `loss()` (a new batch each call), the rate decayed from `lr` on a
    cosine; a progress bar on stderr shows the loss as PSNR."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    bar = tqdm(range(steps), desc="training", unit="step", file=sys.stderr)
    for _ in bar:
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(psnr=f"{-10 * math.log10(max(value.item(), 1e-10)):.2f}")
