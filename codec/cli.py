"""`latent-gallery`: encode images to latent files, decode them, inspect them.

Exit status: 0 on success, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_write
from .container import LatentFile
from .errors import CodecError
from .methods import method_by_id, method_names
from .pipeline import load_codec
from .settings import MAX_EFFORT, CodecSettings

PROG = "latent-gallery"


Extend = Callable[[argparse._SubParsersAction], None]


def build_parser(extend: Extend | None = None) -> argparse.ArgumentParser:
    """The argument parser of all subcommands; `extend` adds more (each sets `run`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Store images as Stable Diffusion latents. Models come from "
        "LATENT_GALLERY_ENCODER / LATENT_GALLERY_DECODER (hub id, folder or file).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    encode = commands.add_parser("encode", help="encode images to .sdz latent files")
    encode.add_argument("inputs", nargs="+", type=Path, metavar="IN")
    encode.add_argument("-o", "--output", type=Path, help="output file (one input) or folder")
    rate = encode.add_mutually_exclusive_group()
    rate.add_argument("-q", "--quality", type=_quality, help="1 (smallest) .. 100 (best)")
    rate.add_argument("--target-bytes", type=_positive, metavar="N", help="largest file size")
    rate.add_argument(
        "--target-psnr", type=float, metavar="DB", help="smallest file reaching this PSNR"
    )
    encode.add_argument(
        "--effort",
        type=_effort,
        metavar="E",
        help=f"0 (plain encoder) .. {MAX_EFFORT} (most refinement steps) or auto; default: "
        "LATENT_GALLERY_EFFORT, else auto (what fits 3x the encoder's time on this machine)",
    )
    encode.add_argument("-m", "--method", choices=method_names(), help="default: ec")
    encode.set_defaults(run=run_encode)

    decode = commands.add_parser("decode", help="decode a .sdz latent file to an image")
    decode.add_argument("input", type=Path, metavar="IN.sdz")
    decode.add_argument("-o", "--output", type=Path, help="image file (format from suffix)")
    decode.set_defaults(run=run_decode)

    info = commands.add_parser("info", help="show a latent file's header")
    info.add_argument("input", type=Path, metavar="IN.sdz")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_info)
    if extend is not None:
        extend(commands)
    return parser


def main(
    argv: Sequence[str] | None = None,
    extend: Extend | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """Entry point of the console script; `extend` adds subcommands (see `build_parser`)
    whose `errors` are reported like the codec's own."""
    args = build_parser(extend).parse_args(argv)
    try:
        args.run(args)
    except (CodecError, OSError, ValueError, *errors) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def run_encode(args: argparse.Namespace) -> None:
    """Encode each input; several inputs show a progress bar."""
    codec = load_codec(_settings(args.method))
    targets = _encode_targets(args.inputs, args.output)
    bar = tqdm(targets, unit="image", disable=len(targets) < 2, file=sys.stderr)
    for source, target in bar:
        bar.set_postfix_str(source.name)
        data = codec.compress(
            source,
            quality=args.quality,
            target_bytes=args.target_bytes,
            target_psnr=args.target_psnr,
            effort=args.effort,
        ).data
        atomic_write(target, data)
        if len(targets) == 1:
            header = LatentFile.from_bytes(data)
            print(f"{target}: {len(data)} bytes, {header.bits_per_pixel:.3f} bits per pixel")


def run_decode(args: argparse.Namespace) -> None:
    """Decode one latent file to an image file."""
    data = args.input.read_bytes()
    image = load_codec(CodecSettings.from_env()).decompress(data)
    target = args.output or args.input.with_suffix(".png")
    buffer = io.BytesIO()
    image.save(buffer, format=_image_format(target))
    atomic_write(target, buffer.getvalue())


def run_info(args: argparse.Namespace) -> None:
    """Print the header fields of a latent file."""
    header = LatentFile.from_bytes(args.input.read_bytes())
    fields = {
        "file": str(args.input),
        "bytes": header.size,
        "bits_per_pixel": round(header.bits_per_pixel, 4),
        "width": header.width,
        "height": header.height,
        "padding": list(header.padding),
        "latent_shape": list(header.latent_shape),
        "latent_space": header.space.name,
        "method": method_by_id(header.method_id).name,
        "encoder": header.encoder_family,
        "encoder_fingerprint": header.encoder_fingerprint.hex(),
        "tuned_for": header.tuned_for,
        "format_version": header.version,
    }
    if args.json:
        print(json.dumps(fields, indent=2))
    else:
        width = max(map(len, fields))
        for key, value in fields.items():
            print(f"{key:<{width}}  {value}")


def _settings(method: str | None) -> CodecSettings:
    settings = CodecSettings.from_env()
    return settings if method is None else dataclasses.replace(settings, method=method)


def _encode_targets(inputs: list[Path], output: Path | None) -> list[tuple[Path, Path]]:
    """Pairs (input, output path): beside the input, into a folder, or one named file."""
    if output is not None and len(inputs) == 1 and not output.is_dir():
        return [(inputs[0], output)]
    if output is not None and not output.is_dir():
        raise ValueError(f"{output} is not a folder (several inputs need an output folder)")
    return [(src, (output or src.parent) / f"{src.stem}.sdz") for src in inputs]


def _image_format(path: Path) -> str:
    formats = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}
    try:
        return formats[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: choose an output suffix among {', '.join(formats)}") from None


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("quality must be in 1..100")
    return value


def _effort(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) > MAX_EFFORT:
        raise argparse.ArgumentTypeError(f"effort must be auto or 0..{MAX_EFFORT}")
    return int(text)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


if __name__ == "__main__":
    sys.exit(main())
