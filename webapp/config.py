"""Settings: environment variables -> `app.config` (see the README's Configuration table)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codec.settings import env_number

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The app settings the `LATENT_GALLERY_*` variables give (defaults where unset)."""
    return {
        "DATA": Path(environ.get("LATENT_GALLERY_DATA", "instance")),
        "CACHE_BYTES": int(env_number(environ, "LATENT_GALLERY_CACHE_MB", 256, float) * 2**20),
        "MAX_CONTENT_LENGTH": int(
            env_number(environ, "LATENT_GALLERY_MAX_UPLOAD_MB", 25, float) * 2**20
        ),
        "SECRET_KEY": environ.get("LATENT_GALLERY_SECRET_KEY"),
        "UPLOAD_RATE": parse_rate(environ.get("LATENT_GALLERY_UPLOAD_RATE", "30/minute")),
        "RENDER_QUEUE": env_number(environ, "LATENT_GALLERY_QUEUE", 64),
        "DECODE_TIMEOUT": env_number(environ, "LATENT_GALLERY_DECODE_TIMEOUT", 30, float),
        "RENDER_BATCH": env_number(environ, "LATENT_GALLERY_BATCH", 8),
    }


def parse_rate(text: str) -> tuple[int, float]:
    """`"30/minute"` -> (30 requests, 60.0 seconds)."""
    match = _RATE.match(text)
    if not match or int(match[1]) < 1:
        raise ValueError(
            f"LATENT_GALLERY_UPLOAD_RATE={text!r}: expected '<count>/<second|minute|hour|day>'"
        )
    return int(match[1]), float(_PERIODS[match[2]])
