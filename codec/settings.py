"""Codec settings from environment variables, with defaults that work on a laptop, and the one
check of whether a codec can run with them (`check_settings`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .errors import SettingsError
from .images import DEFAULT_MAX_PIXELS
from .methods import method_names
from .models.loader import check_spec
from .models.taesd import DEFAULT_HUB_ID

DEFAULT_METHOD = "ec"
MAX_EFFORT = 9
RENDER_PRECISIONS = ("auto", "model")
"""`auto`: renders decode in `hardware.fast_dtype`; `model`: in the decoder's own precision."""
DEVICES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
"""The values `LATENT_GALLERY_DEVICE` takes (`auto`: cuda, then mps, then cpu)."""


@dataclass(frozen=True)
class CodecSettings:
    """What a `Codec` loads and how it runs (see README, Configuration); `check_settings`
    refuses values no codec can run with."""

    encoder: str = DEFAULT_HUB_ID
    decoder: str = DEFAULT_HUB_ID
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    tile: int = 768
    method: str = DEFAULT_METHOD
    correction: str = "auto"
    decoder_tuning: str = "auto"
    thumbnail_decoder: str = "auto"
    effort: str = "auto"
    render_precision: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CodecSettings:
        """Read the `LATENT_GALLERY_*` variables listed in the README (`SettingsError` on a
        number that does not parse)."""
        defaults = cls()
        return cls(
            encoder=environ.get("LATENT_GALLERY_ENCODER", defaults.encoder),
            decoder=environ.get("LATENT_GALLERY_DECODER", defaults.decoder),
            device=environ.get("LATENT_GALLERY_DEVICE", defaults.device),
            max_pixels=env_number(environ, "LATENT_GALLERY_MAX_PIXELS", defaults.max_pixels),
            tile=env_number(environ, "LATENT_GALLERY_TILE", defaults.tile),
            method=environ.get("LATENT_GALLERY_METHOD", defaults.method),
            correction=environ.get("LATENT_GALLERY_CORRECTION", defaults.correction),
            decoder_tuning=environ.get("LATENT_GALLERY_DECODER_TUNING", defaults.decoder_tuning),
            thumbnail_decoder=environ.get(
                "LATENT_GALLERY_THUMBNAIL_DECODER", defaults.thumbnail_decoder
            ),
            effort=environ.get("LATENT_GALLERY_EFFORT", defaults.effort).strip().lower(),
            render_precision=environ.get(
                "LATENT_GALLERY_RENDER_PRECISION", defaults.render_precision
            ).strip(),
        )


def check_settings(settings: CodecSettings) -> None:
    """Raise `SettingsError`, its message starting with the variable's name, at the first
    setting no codec can run with; loads nothing (what a model or weights file holds is
    checked when it loads)."""
    s = settings
    check_spec(s.encoder, "LATENT_GALLERY_ENCODER")
    check_spec(s.decoder, "LATENT_GALLERY_DECODER")
    if not DEVICES.fullmatch(s.device):
        _refuse("DEVICE", s.device, "auto, cpu, cuda, cuda:N or mps")
    if s.max_pixels <= 0:
        _refuse("MAX_PIXELS", s.max_pixels, "a positive integer")
    if s.tile <= 0 or s.tile % 64:
        _refuse("TILE", s.tile, "a positive multiple of 64 pixels")
    if s.method not in method_names():
        _refuse("METHOD", s.method, f"one of {', '.join(method_names())}")
    for name, value in (
        ("CORRECTION", s.correction),
        ("DECODER_TUNING", s.decoder_tuning),
        ("THUMBNAIL_DECODER", s.thumbnail_decoder),
    ):
        if value not in ("auto", "off") and not Path(value).is_file():
            _refuse(name, value, "auto, off or a file's path")
    if s.effort != "auto" and not (s.effort.isdigit() and int(s.effort) <= MAX_EFFORT):
        _refuse("EFFORT", s.effort, f"auto or an integer 0..{MAX_EFFORT}")
    if s.render_precision not in RENDER_PRECISIONS:
        _refuse("RENDER_PRECISION", s.render_precision, " or ".join(RENDER_PRECISIONS))


def _refuse(name: str, value: object, expected: str) -> NoReturn:
    """Raise the `SettingsError` of `LATENT_GALLERY_<name>`'s `value`."""
    raise SettingsError(f"LATENT_GALLERY_{name}={value!r}: expected {expected}")


def env_number(environ: Mapping[str, str], name: str, default: float, kind: type = int) -> float:
    """A positive number (`kind` int or float) from the variable `name`, or `default`
    (`SettingsError` naming the variable if it is not one)."""
    raw = environ.get(name)
    if raw is None:
        return default
    expected = f"{name}={raw!r}: expected a positive {'integer' if kind is int else 'number'}"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(expected) from None
    if value <= 0:
        raise SettingsError(expected)
    return value
