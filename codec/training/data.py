"""What the training tools learn from: the photos named on the command line, their latents
(each photo and a half-size copy, encoded, or coded as an upload is), and random crops."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..images import image_to_tensor
from ..methods import get_method
from ..models import LatentAutoencoder
from ..pipeline import Codec
from ..transform import correct, latent_of

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "grass.png",
    "gravel.png", "motorcycle_left.png", "page.png", "rocket.jpg", "text.png",
)  # fmt: skip
"""The photographs scikit-image ships in its wheel (people, animals, objects, texture, text)."""
SCALES = (1.0, 0.5)
"""Each photo's sizes: itself and a half-size copy."""


def skimage_photos() -> list[Path]:
    """The paths of `SKIMAGE_PHOTOS` in the installed scikit-image."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return [folder / name for name in SKIMAGE_PHOTOS]


def photo_paths(sources: Sequence[Path]) -> list[Path]:
    """The image files named in `sources`, folders expanded (sorted), in order."""
    paths = []
    for source in sources:
        if source.is_dir():
            paths += sorted(p for p in source.iterdir() if p.suffix.lower() in SUFFIXES)
        else:
            paths.append(source)
    return paths


def read_photo(path: Path) -> Image.Image | None:
    """The RGB image at `path`, or None (and a line on stderr) if it is not a readable image."""
    try:
        return Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
        return None


def readable_photos(paths: Sequence[Path], work: str) -> Iterator[Image.Image]:
    """Each readable image of `paths` (`read_photo`), under a progress bar named `work`."""
    for path in tqdm(paths, desc=work, unit="photo", file=sys.stderr):
        photo = read_photo(path)
        if photo is not None:
            yield photo


def encoded_latents(
    paths: Sequence[Path], encoder: LatentAutoencoder, crop: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(latent, pixels) of each readable photo at each of `SCALES` that holds a `crop`-latent
    square."""
    downscale = encoder.space.downscale
    pairs = []
    for photo in readable_photos(paths, "encoding"):
        for scale in SCALES:
            w, h = (int(side * scale) // downscale * downscale for side in photo.size)
            if min(w, h) < crop * downscale:
                continue
            pixels = image_to_tensor(photo.resize((w, h), Image.LANCZOS) if scale != 1 else
                                     photo.crop((0, 0, w, h)))  # fmt: skip
            pairs.append((encoder.encode(pixels)[0], pixels[0]))
    return pairs


def stored_latents(codec: Codec, paths: Sequence[Path]) -> list[tuple[np.ndarray, torch.Tensor]]:
    """(dequantized latent as a file stores it, photo pixels `(3, H, W)`) per picture: each
    photo and a half-size copy, encoded, corrected and coded at the default quality as an
    upload at effort 0 is."""
    coder = get_method(codec.settings.method)
    pairs = []
    for latent, pixels in encoded_latents(paths, codec.encoder, 1):
        stored = coder.round_trip(correct(codec, latent.numpy()), coder.default_quality)
        pairs.append((stored, pixels))
    return pairs


def random_crops(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    batch: int,
    crop: int,
    factor: int,
    generator: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` crops of pairs drawn by `generator`, stacked: a `crop` square at a random place
    of the first of a pair `(C, h, w)`, and the same place of the second, `factor` times larger."""
    inputs, targets, side = [], [], crop * factor
    for index in generator.integers(len(pairs), size=batch):
        source, target = pairs[index]
        y = generator.integers(source.shape[1] - crop + 1)
        x = generator.integers(source.shape[2] - crop + 1)
        inputs.append(source[:, y : y + crop, x : x + crop])
        targets.append(target[:, y * factor : y * factor + side, x * factor : x * factor + side])
    return torch.stack(inputs), torch.stack(targets)


def coded_latents(
    codec: Codec,
    paths: Sequence[Path],
    long_sides: Sequence[int],
    qualities: Sequence[int],
    generator: np.random.Generator,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(latent as a file stores it, photo pixels `(3, H, W)`) per photo and size: each photo
    downscaled to each of `long_sides` (at its own size once for the sides it does not exceed),
    encoded and corrected as an upload is (`latent_of`), and
    coded by the configured method at a quality drawn from `qualities` (with RDOQ, as a file)."""
    coder = get_method(codec.settings.method)
    downscale = codec.encoder.space.downscale
    pairs = []
    for photo in readable_photos(paths, "coding"):
        sizes = {
            tuple(int(n * min(1.0, side / max(photo.size))) // downscale * downscale
                  for n in photo.size)
            for side in long_sides
        }  # fmt: skip
        for size in sorted(sizes):
            picture = photo.resize(size, Image.LANCZOS, reducing_gap=3.0)
            stored = coder.round_trip(latent_of(codec, picture), int(generator.choice(qualities)))
            pairs.append((torch.from_numpy(stored), image_to_tensor(picture)[0]))
    return pairs
