"""Shared pieces of the benchmarks: paths, the codec, Kodak images and their cached latents."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from codec import Codec, CodecSettings, load_codec
from codec.hardware import detect
from codec.transform import correct, latent_of

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_KODAK = SHARED / "images" / "kodak"
DEFAULT_PHOTOS = SHARED / "images" / "photos"
DEFAULT_WEIGHTS = SHARED / "weights" / "taesd"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@cache
def machine(device: str = "cpu") -> str:
    """What a benchmark's speed figures were measured on (CPU class or GPU), for its header
    line and the `machine` column of its CSV."""
    return detect(device).describe()


@dataclass(frozen=True)
class Photo:
    """A benchmark image, its float latent (the encoder's, or corrected: `corrected_photo`) and
    the seconds the encoder (and correction) took for it."""

    name: str
    image: Image.Image
    latent: np.ndarray
    latent_s: float


def make_codec(weights: Path) -> Codec:
    """A CPU codec with the same encoder and decoder (a TAESD folder or other model spec)."""
    if not weights.exists():
        raise SystemExit(f"{weights} is missing: pass --weights (the TAESD weights in ../shared)")
    return load_codec(
        CodecSettings(encoder=str(weights), decoder=str(weights), device="cpu", method="palette")
    )


def uncorrected(codec: Codec) -> Codec:
    """`codec` without its learned correction, on the same models: what codes the encoder's own
    latents (a `Photo`'s before `corrected_photo`)."""
    settings = replace(codec.settings, correction="off")
    return load_codec(settings, encoder=codec.encoder, decoder=codec.decoder)


def image_paths(folder: Path, count: int | None = None) -> list[Path]:
    """The first `count` PNG and JPEG images of a folder (all of them by default), by name."""
    found = folder.iterdir() if folder.is_dir() else ()
    paths = sorted(path for path in found if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no PNG or JPEG images in {folder}: pass the folder (../shared/images)")
    return paths[:count]


def load_photo(codec: Codec, path: Path, cache: Path) -> Photo:
    """The image at `path` and its latent, encoded once and then read from `cache`."""
    image = Image.open(path).convert("RGB")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    key = f"{path.stem}-{digest}-{codec.encoder.encoder_fingerprint.hex()}.npz"
    file = cache / key
    if file.exists():
        stored = np.load(file)
        return Photo(path.stem, image, stored["latent"], float(stored["seconds"]))
    start = time.perf_counter()
    latent = latent_of(codec, image, corrected=False)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, latent=latent, seconds=seconds)
    return Photo(path.stem, image, latent, seconds)


def corrected_photo(codec: Codec, photo: Photo) -> Photo:
    """`photo` with its latent moved by the codec's learned correction (the latent
    `codec.compress` takes), and the time added."""
    start = time.perf_counter()
    latent = correct(codec, photo.latent)
    seconds = photo.latent_s + time.perf_counter() - start
    return replace(photo, latent=latent, latent_s=seconds)
