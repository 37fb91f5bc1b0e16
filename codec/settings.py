"""Codec settings from environment variables, with defaults that work on a laptop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .images import DEFAULT_MAX_PIXELS
from .models.taesd import DEFAULT_HUB_ID

DEFAULT_METHOD = "ec"


@dataclass(frozen=True)
class CodecSettings:
    """What a `Codec` loads and how it runs (see README, Configuration)."""

    encoder: str = DEFAULT_HUB_ID
    decoder: str = DEFAULT_HUB_ID
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    tile: int = 1024
    method: str = DEFAULT_METHOD

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CodecSettings:
        """Read the `LATENT_GALLERY_*` variables listed in the README."""
        defaults = cls()
        return cls(
            encoder=environ.get("LATENT_GALLERY_ENCODER", defaults.encoder),
            decoder=environ.get("LATENT_GALLERY_DECODER", defaults.decoder),
            device=environ.get("LATENT_GALLERY_DEVICE", defaults.device),
            max_pixels=_positive_int(environ, "LATENT_GALLERY_MAX_PIXELS", defaults.max_pixels),
            tile=_positive_int(environ, "LATENT_GALLERY_TILE", defaults.tile),
            method=environ.get("LATENT_GALLERY_METHOD", defaults.method),
        )


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value
