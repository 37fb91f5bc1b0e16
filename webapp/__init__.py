"""Latent Gallery's web app: `create_app()` (Flask application factory)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from codec import Codec, load_codec

from . import api, errors, health, media, openapi, pages, previews, security
from .admission import WaitSlots
from .cache import ByteLRU
from .codec_host import CodecHost
from .gallery import Gallery, attach
from .ingest import InMemoryRequest
from .metrics import Metrics
from .settings import Settings
from .storage import ImageStore

ROOT = Path(__file__).resolve().parent.parent


def create_app(settings: Settings | None = None, *, codec: Codec | None = None) -> Flask:
    """Build the app from `settings` (default: the environment) on `codec` (default:
    `codec.load_codec(settings.codec)`).

    Every setting is checked here: a bad one raises `ValueError` naming its variable, so the
    server does not start. The models are not loaded here: the codec host loads them on first
    use, in the serving process.
    """
    settings = settings or Settings.from_env()
    codec = codec or load_codec(settings.codec)
    app = Flask(
        __name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static")
    )
    app.request_class = InMemoryRequest
    settings.data.mkdir(parents=True, exist_ok=True)
    store = ImageStore.open(settings.data, settings.database_url, settings.storage_url)
    store.prepare()
    app.config.update(
        SECRET_KEY=settings.secret_key or store.secret_key(),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.origin.startswith("https://"),
    )
    metrics = Metrics()
    gallery = Gallery(
        settings=settings,
        store=store,
        codec_host=CodecHost(codec),
        cache=ByteLRU(settings.cache_bytes),
        metrics=metrics,
        waits=WaitSlots.for_threads(settings.threads),
        budget=security.UploadBudget(app, settings, metrics),
    )
    attach(app, gallery)
    app.context_processor(lambda: {"settings": settings})

    errors.init_app(app)
    security.init_app(app, settings)
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
