"""Gallery thumbnails: the full decode resized against the thumbnail decoder's.

    python -m benchmarks.thumbnails [--weights DIR] [--kodak DIR] [--count 24] [--repeats 2]
                                    [--device auto] [--batch 1] [--width 256]

Each Kodak photo is stored as an upload is (effort 0, default quality, the learned
correction), then its `--width` thumbnail made three ways and scored by PSNR against the photo
resized to that width (Lanczos, as every resized thumbnail here): today's full decode resized,
the thumbnail decoder's decode straight to the thumbnail's size, and the untuned thumbnail
decoder's (the same layers with the decoder's own weights). Milliseconds are per image of one
decoder pass over `--batch` copies of the latent (pixels back on the CPU), fastest of
`--repeats`, interleaved, on `--device` (fp16 on CUDA, as served). Prints a table per photo
and the means; names the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from codec import CodecSettings, load_codec, unpack
from codec.images import tensor_to_image
from codec.measures import psnr
from codec.pipeline import DECODE_OVERLAP
from codec.thumbnail_decoder import ThumbnailDecoder
from codec.transform import correct
from webapp.render.formats import thumbnail

from .common import DEFAULT_KODAK, DEFAULT_OUT, DEFAULT_WEIGHTS, image_paths, load_photo, machine


def fastest(runs: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Seconds of each run, fastest of `repeats`, every run once per round."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    """Store each photo, make its thumbnails, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--kodak", type=Path, default=DEFAULT_KODAK)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto", help="as LATENT_GALLERY_DEVICE")
    parser.add_argument("--batch", type=int, default=1, help="latents per decoder pass")
    parser.add_argument("--width", type=int, default=256, help="thumbnail width, at most half")
    args = parser.parse_args()
    if not args.weights.exists():
        raise SystemExit(f"{args.weights} is missing: pass --weights (the TAESD weights)")
    weights = str(args.weights)
    settings = CodecSettings(encoder=weights, decoder=weights, device=args.device, effort="0")
    codec = load_codec(settings)
    thumbs = codec.thumbnail_decoder
    if thumbs is None:
        raise SystemExit(f"no thumbnail decoder in codec/weights/thumbnail for {args.weights}")
    untuned = ThumbnailDecoder(codec.decoder)
    dtype = codec.decoder.dtype
    print(f"machine: {machine(str(codec.decoder.device))}; {torch.get_num_threads()} torch "
          f"threads; {dtype}, batches of {args.batch}, {args.width}-px thumbnails")  # fmt: skip
    print(f"{'photo':<8} {'full dB':>8} {'tuned dB':>9} {'untuned dB':>11} "
          f"{'full ms':>8} {'tuned ms':>9}")  # fmt: skip
    rows = []
    for path in image_paths(args.kodak, args.count):
        photo = load_photo(codec, path, DEFAULT_OUT / "latents")
        data = codec.compress(photo.image, latent=correct(codec, photo.latent)).data
        _, stored = unpack(data, codec.decoder.space)
        z = torch.from_numpy(stored)[None]
        reference = thumbnail(photo.image, args.width)
        width, height = reference.size
        scale = (height / photo.image.height, width / photo.image.width)
        batch = z.expand(args.batch, -1, -1, -1)
        decodes = {
            "full": lambda z=batch: codec.decode_latents(z),
            "tuned": lambda z=batch, s=scale: codec.decode_latents(z, s),
        }
        ms = {k: 1000 * v / args.batch for k, v in fastest(decodes, args.repeats).items()}
        full = thumbnail(tensor_to_image(codec.decode_latents(z)[0]), args.width)
        tile = codec.settings.tile // codec.decoder.space.downscale
        scores = [
            psnr(reference, image)
            for image in (
                full,
                tensor_to_image(codec.decode_latents(z, scale)[0, :, :height, :width]),
                tensor_to_image(
                    untuned.decode(z, scale, tile, DECODE_OVERLAP)[0, :, :height, :width]
                ),
            )
        ]
        rows.append([*scores, ms["full"], ms["tuned"]])
        print(f"{path.stem:<8} {scores[0]:>8.2f} {scores[1]:>9.2f} {scores[2]:>11.2f} "
              f"{ms['full']:>8.1f} {ms['tuned']:>9.1f}", flush=True)  # fmt: skip
    table = np.array(rows)
    mean = table.mean(axis=0)
    gaps = table[:, 1] - table[:, 0]
    print(f"{'mean':<8} {mean[0]:>8.2f} {mean[1]:>9.2f} {mean[2]:>11.2f} "
          f"{mean[3]:>8.1f} {mean[4]:>9.1f}")  # fmt: skip
    print(
        f"tuned against full: mean {gaps.mean():+.2f} dB, worst {gaps.min():+.2f} dB; "
        f"untuned {np.mean(table[:, 2] - table[:, 0]):+.2f} dB; "
        f"decoder time {mean[4] / mean[3]:.2f}x of the full decode's"
    )


if __name__ == "__main__":
    main()
