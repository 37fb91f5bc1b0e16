"""The training tools' shared command line: `--images` and `--out`, the codec from the
environment, exit statuses 0 written, 2 no photos, 1 a codec or value error (each error one
line on stderr)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import CodecError
from ..learned_weights import LearnedWeights
from ..pipeline import Codec, load_codec
from ..settings import CodecSettings
from .data import photo_paths, skimage_photos


def tool_parser(files: LearnedWeights, doc: str, out_name: str) -> argparse.ArgumentParser:
    """The parser of the tool that writes `files` (its `command`, described by the first line
    of `doc`) with `--images` and `--out` (default: `out_name` in the shipped folder); the
    tool adds its own options."""
    parser = argparse.ArgumentParser(prog=files.command, description=doc.split("\n")[0])
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help="photos, or folders of photos, to learn from")  # fmt: skip
    parser.add_argument("--skimage", action="store_true",
                        help="also learn from scikit-image's photographs")  # fmt: skip
    parser.add_argument("--out", type=Path, help=f"default: {files.folder}/{out_name}")
    return parser


def run_tool(
    args: argparse.Namespace, learn: Callable[[Codec, list[Path]], str], **settings: str
) -> int:
    """A tool's exit status: `learn(codec, photos)` learns, writes its file and returns the
    line to print; no photos in `args.images` (and scikit-image's with `args.skimage`) is 2, a
    `CodecError` or `ValueError` 1. The codec's settings come from the environment, those given
    in `settings` replaced."""
    paths = photo_paths(args.images) + (skimage_photos() if args.skimage else [])
    if not paths:
        print("error: no images found in --images", file=sys.stderr)
        return 2
    try:
        message = learn(load_codec(replace(CodecSettings.from_env(), **settings)), paths)
    except (CodecError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0
