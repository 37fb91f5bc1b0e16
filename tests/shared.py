"""Access to `../shared` (real weights, Kodak photos): skip when absent, fail in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("LATENT_GALLERY_SHARED", Path(__file__).resolve().parents[1].parent / "shared")
)


def missing(message: str) -> None:
    """Skip the test for a missing resource, or fail when `LATENT_GALLERY_REQUIRE_SHARED=1`
    (as CI sets), where everything the tests need must be present."""
    if os.environ.get("LATENT_GALLERY_REQUIRE_SHARED") == "1":
        pytest.fail(message + "; LATENT_GALLERY_REQUIRE_SHARED=1 makes this an error")
    pytest.skip(message)


def require_shared(*relative: str) -> Path:
    """The path `../shared/<relative>`, or `missing()` if it is not there."""
    path = SHARED.joinpath(*relative)
    if not path.exists():
        missing(f"{path} is missing (real TAESD weights and Kodak photos live in ../shared)")
    return path


def taesd_path() -> Path:
    """The real TAESD weights folder (ComfyUI pair)."""
    return require_shared("weights", "taesd")


def kodak_path(name: str = "") -> Path:
    """The Kodak folder, or one image in it (e.g. `kodim23.png`)."""
    return require_shared("images", "kodak", *([name] if name else []))


def photo_path(name: str) -> Path:
    """One of the real photographs in `../shared/images/photos` (several camera-size)."""
    return require_shared("images", "photos", name)
