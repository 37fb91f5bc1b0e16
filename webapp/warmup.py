"""After a start, warm the newest gallery page: the first visitor finds it decoded.

`start(app)` runs in the serving process (gunicorn's `post_worker_init`, never the master).
First, in a thread of their own, the newest page's previews (no model, a fraction of a second
each) go into the render cache, so that a first visitor's placeholders come from it. Beside
that it loads the models in a background thread and, once they are loaded, queues the newest
`PAGE_SIZE` images at BACKGROUND priority, newest first, as many as the cache can hold
(`sizes.rendered_bytes`): the gallery's thumbnails, as pages show them. Nothing larger: a decode in
flight is not interrupted, and a visitor who opens an image page meanwhile would wait behind a
display or full-size decode (2–3 s on a 2-core CPU) where a thumbnail's takes 0.3–0.5 s. A
visitor's own requests go ahead of them, and one for an image still queued here moves it up.
`LATENT_GALLERY_WARM_ON_START=0` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from flask import Flask
from werkzeug.exceptions import NotFound

from .gallery import PAGE_SIZE, Gallery, get_gallery
from .previews import preview_file
from .render.sizes import CARD_WIDTH, effective_width, rendered_bytes
from .unavailable import ModelUnavailableError

log = logging.getLogger(__name__)


def start(app: Flask) -> None:
    """Load the models in the background, then warm the newest page if the settings say so;
    its previews first, beside the model load."""
    gallery = get_gallery(app)
    if gallery.settings.warm_on_start and gallery.settings.previews:
        threading.Thread(
            target=warm_previews, args=(gallery,), name="previews", daemon=True
        ).start()
    threading.Thread(target=_load_and_warm, args=(gallery,), name="warm-up", daemon=True).start()


def warm_previews(gallery: Gallery) -> list[str]:
    """Put the newest page's previews in the render cache; the ids done (an image deleted
    meanwhile, or in a space no preview map serves, is skipped)."""
    done = []
    records, _ = gallery.store.list_images(PAGE_SIZE)
    for record in records:
        try:
            preview_file(gallery, record)
        except NotFound:
            continue
        done.append(record.id)
    log.info("previews of the newest %d images cached", len(done))
    return done


def warm_newest_page(gallery: Gallery) -> list[str]:
    """Queue the gallery thumbnails of the newest page's images that fit in the cache (with a
    thumbnail decoder, each decoded straight to its size); the ids queued."""
    records, _ = gallery.store.list_images(PAGE_SIZE)
    warmed, budget = [], gallery.cache.max_bytes
    for record in records:
        budget -= rendered_bytes(record.width, record.height)
        if budget < 0:
            break
        warmed.append(record)
    for record in warmed:
        gallery.renderer.warm(record, [effective_width(record.width, CARD_WIDTH)])
    log.info("warming the newest %d images", len(warmed))
    return [record.id for record in warmed]


def _load_and_warm(gallery: Gallery) -> None:
    if gallery.settings.warm_on_start:
        gallery.codec_host.when_loaded(lambda _codec: warm_newest_page(gallery))
    with contextlib.suppress(ModelUnavailableError):  # logged; retried on later requests
        gallery.codec_host.require()
