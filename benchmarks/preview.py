"""Preview quality on Kodak: the shipped preview map against the photo box-downsampled 8×.

    python -m benchmarks.preview [--weights DIR] [--kodak DIR] [--out DIR]

Each photo is encoded as an upload is (the plain latent, cached under --out/latents, then the
learned correction and `ec` at its default quality, no refinement), and its preview computed
from the latent file alone (`codec.preview.preview_of_file`). Prints PSNR at 1/8 scale per
photo and the mean, with the preview's cost and PNG size, and names the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from codec.hardware import detect
from codec.measures import psnr
from codec.preview import preview_of_file
from codec.transform import correct
from webapp.render.formats import encode_png

from .common import DEFAULT_KODAK, DEFAULT_OUT, DEFAULT_WEIGHTS, image_paths, load_photo, make_codec


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--kodak", type=Path, default=DEFAULT_KODAK)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="latent cache folder")
    args = parser.parse_args()

    codec = make_codec(args.weights)
    print(f"machine: {detect('cpu').describe()}; torch threads {torch.get_num_threads()}")
    print(f"{'photo':<8} {'PSNR dB':>8} {'ms':>6} {'PNG bytes':>10}")
    scores, costs, sizes = [], [], []
    for path in image_paths(args.kodak):
        photo = load_photo(codec, path, args.out / "latents")
        latent = correct(codec, photo.latent)
        data = codec.compress(photo.image, latent=latent, method="ec", effort=0).data
        start = time.perf_counter()
        preview = preview_of_file(data)
        costs.append((time.perf_counter() - start) * 1000)
        if preview is None:
            raise SystemExit(f"no preview map is shipped for {codec.encoder.space.name}")
        scores.append(psnr(photo.image.reduce(8), preview))
        sizes.append(len(encode_png(preview)))
        print(f"{photo.name:<8} {scores[-1]:8.2f} {costs[-1]:6.1f} {sizes[-1]:10d}")
    print(
        f"{'mean':<8} {statistics.mean(scores):8.2f} {statistics.mean(costs):6.1f} "
        f"{statistics.mean(sizes):10.0f}   (min {min(scores):.2f}, max {max(scores):.2f} dB)"
    )


if __name__ == "__main__":
    main()
