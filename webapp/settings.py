"""One typed settings object, built once from the `LATENT_GALLERY_*` environment variables.

`Settings.from_env()` reads every variable in the README's Configuration table: the codec's
(`codec.CodecSettings`), the web app's and the server's (`gunicorn.conf.py`). `create_app`
keeps it on the app's `Gallery` (`gallery.settings`); tests pass their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codec.settings import CodecSettings, env_number

_RATE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour|day)\s*")
_BASE_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DATABASE_SCHEMES = ("sqlite", "postgresql")
REDIS_SCHEMES = ("redis", "rediss", "unix")
_FLAGS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)


@dataclass(frozen=True)
class Settings:
    """Everything the gallery reads from its environment (defaults where unset)."""

    codec: CodecSettings = field(default_factory=CodecSettings)
    data: Path = Path("instance")
    cache_bytes: int = 256 * 2**20
    max_upload_bytes: int = 25 * 2**20
    secret_key: str | None = None
    upload_rate: tuple[int, float] = (30, 60.0)
    upload_megapixels: tuple[int, float] = (60, 60.0)
    """Megapixels (as stored, after `max_side`) one client may upload per period."""
    max_files: int = 8
    max_side: int = 2048
    """Longest side an image is stored at; larger uploads are scaled down to it."""
    render_queue: int = 64
    render_batch: int | None = None
    """None: `auto` (`render.batcher.auto_batch`, by the decoder's device)."""
    decode_timeout: float = 30.0
    warm_on_start: bool = True
    previews: bool = True
    encode_queue: int = 16
    upload_wait: float = 20.0
    bind: str = "127.0.0.1:8000"
    threads: int = 16
    log_level: str = "info"
    database_url: str = ""
    storage_url: str = ""
    redis_url: str | None = None
    trusted_proxies: int = 0
    base_url: str = ""
    """The site's public origin for absolute URLs; "" means `http://<bind>`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Parse the variables; a bad value is a `ValueError` that names the variable."""
        d = cls()
        batch = environ.get("LATENT_GALLERY_BATCH", "auto").strip().lower()

        def number(name: str, default: float, kind: type = int) -> Any:
            return env_number(environ, f"LATENT_GALLERY_{name}", default, kind)

        def flag(name: str, default: bool) -> bool:
            raw = environ.get(f"LATENT_GALLERY_{name}")
            return default if raw is None else parse_flag(f"LATENT_GALLERY_{name}", raw)

        return cls(
            codec=CodecSettings.from_env(environ),
            data=Path(environ.get("LATENT_GALLERY_DATA", str(d.data))),
            cache_bytes=int(number("CACHE_MB", d.cache_bytes / 2**20, float) * 2**20),
            max_upload_bytes=int(
                number("MAX_UPLOAD_MB", d.max_upload_bytes / 2**20, float) * 2**20
            ),
            secret_key=environ.get("LATENT_GALLERY_SECRET_KEY") or None,
            upload_rate=parse_rate(
                "LATENT_GALLERY_UPLOAD_RATE", environ.get("LATENT_GALLERY_UPLOAD_RATE", "30/minute")
            ),
            upload_megapixels=parse_rate(
                "LATENT_GALLERY_UPLOAD_MEGAPIXELS",
                environ.get("LATENT_GALLERY_UPLOAD_MEGAPIXELS", "60/minute"),
            ),
            max_files=number("MAX_FILES", d.max_files),
            max_side=number("MAX_SIDE", d.max_side),
            render_queue=number("QUEUE", d.render_queue),
            render_batch=None if batch == "auto" else number("BATCH", d.render_batch),
            decode_timeout=number("DECODE_TIMEOUT", d.decode_timeout, float),
            warm_on_start=flag("WARM_ON_START", d.warm_on_start),
            previews=flag("PREVIEWS", d.previews),
            encode_queue=number("ENCODE_QUEUE", d.encode_queue),
            upload_wait=number("UPLOAD_WAIT", d.upload_wait, float),
            bind=environ.get("LATENT_GALLERY_BIND", d.bind),
            threads=number("THREADS", d.threads),
            log_level=parse_choice(
                "LATENT_GALLERY_LOG_LEVEL",
                environ.get("LATENT_GALLERY_LOG_LEVEL", d.log_level),
                LOG_LEVELS,
            ),
            database_url=parse_url(
                "LATENT_GALLERY_DATABASE_URL",
                environ.get("LATENT_GALLERY_DATABASE_URL", ""),
                DATABASE_SCHEMES,
            ),
            storage_url=environ.get("LATENT_GALLERY_STORAGE_URL", d.storage_url),
            redis_url=parse_url(
                "LATENT_GALLERY_REDIS_URL",
                environ.get("LATENT_GALLERY_REDIS_URL", ""),
                REDIS_SCHEMES,
            )
            or None,
            trusted_proxies=parse_hops(environ.get("LATENT_GALLERY_TRUSTED_PROXIES", "0")),
            base_url=parse_base_url(environ.get("LATENT_GALLERY_BASE_URL", "")),
        )

    @property
    def origin(self) -> str:
        """The origin absolute URLs are built on: `base_url`, or the bind address's."""
        return self.base_url or local_base_url(self.bind)


def parse_rate(name: str, text: str) -> tuple[int, float]:
    """`"30/minute"` -> (30, 60.0 seconds); `name` is the variable, for the error."""
    match = _RATE.fullmatch(text)
    if not match or int(match[1]) < 1:
        raise ValueError(f"{name}={text!r}: expected '<count>/<second|minute|hour|day>'")
    return int(match[1]), float(_PERIODS[match[2]])


def parse_choice(name: str, text: str, choices: tuple[str, ...]) -> str:
    """`text` in lower case if it is one of `choices`."""
    value = text.strip().lower()
    if value not in choices:
        raise ValueError(f"{name}={text!r}: expected one of {', '.join(choices)}")
    return value


def parse_url(name: str, text: str, schemes: tuple[str, ...]) -> str:
    """`text` ("" for unset) if its scheme (before `://`, a `+driver` aside) is one of
    `schemes`."""
    scheme = text.partition("://")[0].partition("+")[0]
    if text and ("://" not in text or scheme not in schemes):
        raise ValueError(f"{name}={text!r}: expected a URL starting {' or '.join(schemes)}://")
    return text


def parse_flag(name: str, text: str) -> bool:
    """`"1"`/`"true"`/`"yes"`/`"on"` -> True, `"0"`/`"false"`/`"no"`/`"off"` -> False."""
    value = text.strip().lower()
    if value not in _FLAGS:
        raise ValueError(f"{name}={text!r}: expected 1 or 0 (true/false, yes/no, on/off)")
    return _FLAGS[value]


def parse_hops(text: str) -> int:
    """`"1"` -> 1: how many reverse proxies in front of the app to trust (0 or more)."""
    if not text.strip().isdigit():
        raise ValueError(f"LATENT_GALLERY_TRUSTED_PROXIES={text!r}: expected a whole number >= 0")
    return int(text)


def parse_base_url(text: str) -> str:
    """`"https://gallery.example/"` -> `"https://gallery.example"`: a scheme and a host only."""
    url = text.strip().rstrip("/")
    if url and not _BASE_URL.fullmatch(url):
        raise ValueError(
            f"LATENT_GALLERY_BASE_URL={text!r}: expected http(s)://host[:port], with no path"
        )
    return url


def local_base_url(bind: str) -> str:
    """The origin of the bind address, for a gallery served on this machine only:
    `"0.0.0.0:8000"` -> `"http://127.0.0.1:8000"`, a Unix socket -> `"http://localhost"`."""
    if bind.startswith("unix:"):
        return "http://localhost"
    host, _, port = bind.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"http://{host}:{port}"
