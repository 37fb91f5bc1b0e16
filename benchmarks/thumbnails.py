"""Gallery thumbnails: the full decode resized against the thumbnail decoder's half-scale one.

    python -m benchmarks.thumbnails [--weights DIR] [--kodak DIR] [--count 24] [--repeats 2]

Each Kodak photo is stored as an upload is (effort 0, default quality, the learned
correction), then its 256-px thumbnail made three ways and scored by PSNR against the photo
resized to 256 px (Lanczos, as every thumbnail here): today's full decode resized, the thumbnail
decoder's half-scale decode resized, and the untuned proxy's (the decoder's last stage run at
half scale as it is). Seconds are one decoder pass for the one latent, fastest of `--repeats`,
interleaved: the full decoder in channels-last memory (as served) and contiguous (as before),
and the thumbnail decoder. Prints a table per photo and the means; names the machine.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from codec import Codec, CodecSettings
from codec.images import tensor_to_image
from codec.rate_control import psnr
from webapp.png import thumbnail

from .common import DEFAULT_KODAK, DEFAULT_OUT, DEFAULT_WEIGHTS, kodak_paths, load_photo, machine


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
    args = parser.parse_args()
    if not args.weights.exists():
        raise SystemExit(f"{args.weights} is missing: pass --weights (the TAESD weights)")
    weights = str(args.weights)
    codec = Codec(CodecSettings(encoder=weights, decoder=weights, device="cpu", effort="0"))
    thumbs = codec.thumbnail_decoder
    if thumbs is None:
        raise SystemExit(f"no thumbnail decoder in codec/weights/thumbnail for {args.weights}")
    proxy = codec.decoder.proxy()
    contiguous = copy.deepcopy(codec.decoder.module).to(memory_format=torch.contiguous_format)
    print(f"machine: {machine()}; {torch.get_num_threads()} torch threads")
    print(f"{'photo':<8} {'full dB':>8} {'tuned dB':>9} {'untuned dB':>11} "
          f"{'full s':>7} {'contig s':>9} {'tuned s':>8}")  # fmt: skip
    rows = []
    for path in kodak_paths(args.kodak, args.count):
        photo = load_photo(codec, path, DEFAULT_OUT / "latents")
        latent = codec.correct(photo.latent)
        _, stored = codec.unpack(codec.pack(latent, photo.image.width, photo.image.height))
        z = torch.from_numpy(stored)[None]
        reference = thumbnail(photo.image, 256)
        decodes = {
            "full": lambda z=z: codec.decoder.decode(z),
            "contiguous": lambda z=z: contiguous.decoder(z),
            "tuned": lambda z=z: thumbs.decode(z),
        }
        with torch.inference_mode():
            seconds = fastest(decodes, args.repeats)
        scores = [
            psnr(reference, thumbnail(tensor_to_image(model.decode(z)[0]), 256))
            for model in (codec.decoder, thumbs, proxy)
        ]
        rows.append([*scores, seconds["full"], seconds["contiguous"], seconds["tuned"]])
        print(f"{path.stem:<8} {scores[0]:>8.2f} {scores[1]:>9.2f} {scores[2]:>11.2f} "
              f"{seconds['full']:>7.2f} {seconds['contiguous']:>9.2f} {seconds['tuned']:>8.2f}",
              flush=True)  # fmt: skip
    table = np.array(rows)
    mean = table.mean(axis=0)
    gaps = table[:, 1] - table[:, 0]
    print(f"{'mean':<8} {mean[0]:>8.2f} {mean[1]:>9.2f} {mean[2]:>11.2f} "
          f"{mean[3]:>7.2f} {mean[4]:>9.2f} {mean[5]:>8.2f}")  # fmt: skip
    print(
        f"tuned against full: mean {gaps.mean():+.2f} dB, worst {gaps.min():+.2f} dB; "
        f"untuned {np.mean(table[:, 2] - table[:, 0]):+.2f} dB; "
        f"decoder time {mean[5] / mean[3]:.2f}x of the full decode's"
    )


if __name__ == "__main__":
    main()
