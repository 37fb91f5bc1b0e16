"""`Gallery`: the app's services in one typed object, made by `create_app`, got by `get_gallery`.

A request goes through them in the order of the data path: the `store` (rows and latent files),
the `codec_host` (the codec, its models loaded once), the `renderer` (decodes, PNG and AVIF
bytes, the `cache`) and the `uploads` queue (encode, then store). The renderer and the upload
queue run threads, so each process makes its own on first use (after gunicorn forks, never in
its master); the rest is made once, when the app is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from flask import Flask, abort, current_app

from .admission import WaitSlots
from .cache import ByteLRU
from .codec_host import CodecHost
from .ingest import encode_and_store
from .metadata import ImageRecord
from .metrics import Metrics
from .render import Renderer
from .settings import Settings
from .storage import ImageStore
from .uploads import UploadQueue

if TYPE_CHECKING:
    from .security import UploadBudget

T = TypeVar("T")
_EXTENSION = "latent_gallery"
PAGE_SIZE = 24
"""Cards on a gallery page; start-up warming decodes the newest page's thumbnails."""


class PerProcess(Generic[T]):
    """A service made by `create()` once in each process: a forked child, which inherits its
    parent's object but not its threads, makes its own."""

    def __init__(self, create: Callable[[], T]) -> None:
        self._create = create
        self._entry: tuple[int, T] | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """This process's object, made on first use."""
        entry = self._entry
        if entry is None or entry[0] != os.getpid():
            with self._lock:
                entry = self._entry
                if entry is None or entry[0] != os.getpid():
                    entry = self._entry = (os.getpid(), self._create())
        return entry[1]

    def peek(self) -> T | None:
        """This process's object if it made one (makes none)."""
        entry = self._entry
        return entry[1] if entry is not None and entry[0] == os.getpid() else None

    def pop(self) -> T | None:
        """Forget the object and return it if this process made it, else None."""
        with self._lock:
            entry, self._entry = self._entry, None
        return entry[1] if entry is not None and entry[0] == os.getpid() else None


@dataclass(eq=False)
class Gallery:
    """Everything a request needs besides itself."""

    settings: Settings
    store: ImageStore
    codec_host: CodecHost
    cache: ByteLRU
    metrics: Metrics
    waits: WaitSlots
    budget: UploadBudget
    _renderer: PerProcess[Renderer] = field(init=False, repr=False)
    _uploads: PerProcess[UploadQueue] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._renderer = PerProcess(self._make_renderer)
        self._uploads = PerProcess(self._make_uploads)
        self.metrics.watch(lambda: self.cache.bytes, lambda: self._queue_depth)

    @property
    def renderer(self) -> Renderer:
        """This process's renderer."""
        return self._renderer.get()

    @property
    def uploads(self) -> UploadQueue:
        """This process's upload queue."""
        return self._uploads.get()

    def close(self) -> None:
        """Finish this process's accepted uploads (up to the decode timeout), stop its renderer
        and close the database connections."""
        uploads = self._uploads.pop()
        if uploads is not None:
            uploads.close(self.settings.decode_timeout)
        renderer = self._renderer.pop()
        if renderer is not None:
            renderer.close()
        self.store.metadata.close()

    @property
    def _queue_depth(self) -> int:
        renderer = self._renderer.peek()
        return renderer.queue_depth if renderer is not None else 0

    def _make_renderer(self) -> Renderer:
        s = self.settings
        return Renderer(
            self.codec_host, self.store.read_latent, self.cache, self.metrics, self.waits,
            queue_size=s.render_queue, batch=s.render_batch, timeout=s.decode_timeout,
        )  # fmt: skip

    def _make_uploads(self) -> UploadQueue:
        return UploadQueue(
            lambda data, filename, image_id: encode_and_store(self, data, filename, image_id),
            self.settings.encode_queue,
            self.metrics,
        )


def attach(app: Flask, gallery: Gallery) -> None:
    """Make `gallery` the app's services."""
    app.extensions[_EXTENSION] = gallery


def get_gallery(app: Flask | None = None) -> Gallery:
    """The services of `app` (by default the current app)."""
    return (app or current_app).extensions[_EXTENSION]


def record_or_404(image_id: str) -> ImageRecord:
    """The stored image of an id, or a 404."""
    return get_gallery().store.get(image_id) or abort(404, "No image has this id.")
