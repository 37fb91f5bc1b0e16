"""Codec settings from environment variables, with defaults that work on a laptop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .images import DEFAULT_MAX_PIXELS
from .models.taesd import DEFAULT_HUB_ID

DEFAULT_METHOD = "ec"
MAX_EFFORT = 9
RENDER_PRECISIONS = ("auto", "model")
"""`auto`: renders decode in `hardware.fast_dtype`; `model`: in the decoder's own precision."""


@dataclass(frozen=True)
class CodecSettings:
    """What a `Codec` loads and how it runs (see README, Configuration)."""

    encoder: str = DEFAULT_HUB_ID
    decoder: str = DEFAULT_HUB_ID
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    tile: int = 768
    method: str = DEFAULT_METHOD
    correction: str = "auto"
    thumbnail_decoder: str = "auto"
    effort: str = "auto"
    render_precision: str = "auto"

    def __post_init__(self) -> None:
        if self.render_precision not in RENDER_PRECISIONS:
            raise ValueError(
                f"LATENT_GALLERY_RENDER_PRECISION must be {' or '.join(RENDER_PRECISIONS)}, "
                f"got {self.render_precision!r}"
            )
        if self.effort != "auto" and not (self.effort.isdigit() and int(self.effort) <= MAX_EFFORT):
            raise ValueError(
                f"LATENT_GALLERY_EFFORT must be auto or an integer 0..{MAX_EFFORT}, "
                f"got {self.effort!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CodecSettings:
        """Read the `LATENT_GALLERY_*` variables listed in the README."""
        defaults = cls()
        return cls(
            encoder=environ.get("LATENT_GALLERY_ENCODER", defaults.encoder),
            decoder=environ.get("LATENT_GALLERY_DECODER", defaults.decoder),
            device=environ.get("LATENT_GALLERY_DEVICE", defaults.device),
            max_pixels=env_number(environ, "LATENT_GALLERY_MAX_PIXELS", defaults.max_pixels),
            tile=env_number(environ, "LATENT_GALLERY_TILE", defaults.tile),
            method=environ.get("LATENT_GALLERY_METHOD", defaults.method),
            correction=environ.get("LATENT_GALLERY_CORRECTION", defaults.correction),
            thumbnail_decoder=environ.get(
                "LATENT_GALLERY_THUMBNAIL_DECODER", defaults.thumbnail_decoder
            ),
            effort=environ.get("LATENT_GALLERY_EFFORT", defaults.effort).strip().lower(),
            render_precision=environ.get(
                "LATENT_GALLERY_RENDER_PRECISION", defaults.render_precision
            ).strip(),
        )


def env_number(environ: Mapping[str, str], name: str, default: float, kind: type = int) -> float:
    """A positive number (`kind` int or float) from the variable `name`, or `default`."""
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw}")
    return value
