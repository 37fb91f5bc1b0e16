"""Latent Gallery's web app: `create_app()` (Flask application factory)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from codec import Codec

from . import api, errors, health, media, openapi, pages, previews, security
from .admission import WaitSlots
from .cache import ByteLRU
from .ingest import InMemoryRequest
from .metrics import Metrics
from .settings import Settings
from .storage import ImageStore

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, overridden by `test_config`.

    `test_config` may hold any key of `Settings.app_config` (e.g. `DATA`) and `CODEC`, a
    ready `codec.Codec` to use instead of one built from `Settings.codec`. The models are not loaded
    here: the render service loads them on first use, in the serving process.
    """
    app = Flask(
        __name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static")
    )
    app.request_class = InMemoryRequest
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    settings = Settings.from_env()
    app.config.update(settings.app_config())
    app.config.update(test_config or {})
    app.config["SESSION_COOKIE_SECURE"] = app.config["BASE_URL"].startswith("https://")
    codec = app.config.get("CODEC")
    app.config["CODEC_FACTORY"] = lambda: codec or Codec(settings.codec)
    data = app.config["DATA"] = Path(app.config["DATA"])
    data.mkdir(parents=True, exist_ok=True)
    store = ImageStore.open(data, app.config["DATABASE_URL"], app.config["STORAGE_URL"])
    store.prepare()
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = store.secret_key()
    cache = ByteLRU(app.config["CACHE_BYTES"])
    metrics = Metrics()
    metrics.watch(lambda: cache.bytes, lambda: _queue_depth(app))
    app.extensions.update({
        "latent_gallery.waits": WaitSlots.for_threads(app.config["THREADS"]),
        "latent_gallery.cache": cache,
        "latent_gallery.metrics": metrics,
        "latent_gallery.store": store,
    })  # fmt: skip

    errors.init_app(app)
    security.init_app(app)
    app.add_template_filter(human_bytes)

    app.register_blueprint(api.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(previews.bp)
    return app


def human_bytes(size: float) -> str:
    """`6100` -> `"6.1 KB"` (powers of 1000); a Jinja filter."""
    units = ("B", "KB", "MB", "GB")
    index = 0
    while size >= 1000 and index < len(units) - 1:
        size /= 1000
        index += 1
    return f"{size:.0f} B" if index == 0 else f"{size:.1f} {units[index]}"


def _queue_depth(app: Flask) -> int:
    entry = app.extensions.get("latent_gallery.renderer")
    return entry[1].queue_depth if entry else 0
