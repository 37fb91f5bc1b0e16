"""Decode throughput of the latent decoder by batch size, on the auto-selected device.

    python -m benchmarks.decode_speed --weights DIR --kodak DIR [--device cuda] [--thumbnail 256]

Prints one row per batch size: seconds per batch, images per second, and the PSNR of the
first image against the CPU float32 decode (so fp16 on CUDA is checked, not assumed). With
`--thumbnail WIDTH`, the thumbnail decoder's decode straight to that width instead, against its
CPU float32 one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from codec import CodecSettings, load_codec
from codec.images import open_image, thumbnail_size
from codec.models import load_autoencoder
from codec.transform import latent_of

from .common import machine


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="../shared/weights/taesd")
    parser.add_argument("--kodak", type=Path, default=Path("../shared/images/kodak"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thumbnail", type=int, help="time the thumbnail decoder at this width")
    args = parser.parse_args()

    settings = CodecSettings(encoder=args.weights, decoder=args.weights, device=args.device)
    codec = load_codec(settings)
    image = open_image(args.kodak / "kodim23.png", settings.max_pixels)
    start = time.perf_counter()
    latent = torch.from_numpy(latent_of(codec, image, corrected=False))[None]
    print(f"machine: {machine(codec.decoder.device.type)}")
    print(f"device {codec.decoder.describe()}; encode {time.perf_counter() - start:.3f} s")
    scale = None
    if args.thumbnail:
        width, height = thumbnail_size(image.width, image.height, args.thumbnail)
        scale = (height / image.height, width / image.width)
    on_cpu = load_codec(settings, decoder=load_autoencoder(args.weights, device="cpu"))
    reference = on_cpu.decode_latents(latent, scale)

    print(f"{'batch':>5} {'s/batch':>9} {'images/s':>9} {'PSNR vs cpu fp32':>17}")
    for batch in map(int, args.batches.split(",")):
        latents = latent.repeat(batch, 1, 1, 1)
        codec.decode_latents(latents, scale)  # warm-up (kernels, allocator)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = codec.decode_latents(latents, scale)
            times.append(time.perf_counter() - start)
        seconds = min(times)
        mse = torch.mean((out[:1] - reference) ** 2).item()
        agreement = 10 * np.log10(1 / mse) if mse > 0 else float("inf")
        print(f"{batch:>5} {seconds:>9.4f} {batch / seconds:>9.1f} {agreement:>17.1f}")


if __name__ == "__main__":
    main()
