"""Renderer: latent files -> PNG bytes on demand, cached; the facade over the render pieces.

- `model_host.ModelHost` loads the codec on first use (a failure retried with backoff);
- `decode_batcher.DecodeBatcher` owns the decoder: one thread, a bounded priority queue,
  same-shape batches, deadlines;
- `singleflight.SingleFlight` lets concurrent requests for one render (image id, width) and
  for one image's decode share a single computation: N requests cost one decode;
- `png` makes PNG bytes and thumbnails; `cache.ByteLRU` keeps them, `metrics.Metrics` counts.

A render is served from the cache; a thumbnail whose full size is cached is resized from that
PNG; otherwise the image's latent is decoded once (INTERACTIVE for a visitor, BACKGROUND for
warming) and each width asked for made from the decoded image on a small pool of PNG threads,
so the model never waits on zlib. The decode is at full scale (its PNG cached as the full
size), or, for a thumbnail no wider than half the image when the codec has a thumbnail
decoder, straight to the thumbnail's size, for a fraction of the work (a third for 256 px of
768 px: `codec.thumbnail_decoder`). `put_decoded`
stores an image decoded elsewhere (an upload's reconstruction by the encoder) the same way,
with no decoder pass. One renderer per process (`get_renderer`), created on first use, after
gunicorn forks, so torch and CUDA are never touched in the master.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial

import torch
from flask import Flask, current_app
from PIL import Image

from codec import Codec, CodecError, LatentFile, LatentSpaceMismatchError
from codec.images import tensor_to_image

from .admission import BusyError, WaitSlots
from .cache import ByteLRU
from .decode_batcher import DecodeBatcher, DecodeJob, Priority
from .metrics import Metrics
from .model_host import ModelHost
from .per_process import per_process, pop_own
from .png import decode_png, encode_png, thumbnail, thumbnail_widths
from .singleflight import SingleFlight
from .unavailable import DeadlineError, ModelUnavailableError, RenderUnavailable

log = logging.getLogger(__name__)

_EXTENSION = "latent_gallery.renderer"
WARM_FULL_PIXELS = 1_500_000
"""Largest image whose full size is decoded in the background (about 5 s on a 2-core CPU):
a visitor who arrives meanwhile waits for the decode in flight, so larger ones are decoded
only when someone asks for them."""

Key = tuple[str, int | None]  # (image id, thumbnail width or None for full size)
DecodeKey = tuple[str, int | None]  # (image id, thumbnail width decoded straight to, or None)


@dataclass(frozen=True)
class Decoded:
    """An image decoded: at full size with its PNG (already cached), or a thumbnail."""

    image: Image.Image
    png: bytes | None


class Renderer:
    """PNG renders of stored images: cache, single-flight, decode priorities, thumbnails."""

    def __init__(
        self,
        model: ModelHost,
        read_latent: Callable[[str], bytes],
        cache: ByteLRU,
        metrics: Metrics,
        waits: WaitSlots,
        *,
        queue_size: int = 64,
        batch: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.model = model
        self.cache = cache
        self.metrics = metrics
        self.waits = waits
        self.timeout = timeout
        self._read_latent = read_latent
        self._renders: SingleFlight[Key, bytes] = SingleFlight()
        self._decodes: SingleFlight[DecodeKey, Decoded] = SingleFlight()
        self._queued: dict[DecodeKey, DecodeJob] = {}
        self._waits_on: dict[Key, DecodeKey] = {}
        self._lock = threading.Lock()
        self.batcher = DecodeBatcher(model.require, metrics, queue_size=queue_size, batch=batch)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render-png")

    @property
    def codec(self) -> Codec | None:
        """The codec if the models are loaded (tries no load)."""
        return self.model.codec

    def require_codec(self) -> Codec:
        """The loaded codec, or `ModelUnavailableError` naming why it is not."""
        return self.model.require()

    @property
    def version(self) -> str:
        """Identifies what a render looks like (the decoder's and the thumbnail decoder's
        weights), for ETags and URLs."""
        codec = self.require_codec()
        version = codec.decoder.decoder_fingerprint.hex()
        if codec.thumbnail_decoder is not None:
            version += codec.thumbnail_decoder.decoder_fingerprint.hex()[:4]
        return version

    @property
    def queue_depth(self) -> int:
        """Decode jobs waiting for the model."""
        return self.batcher.queue_depth

    def idle(self) -> bool:
        """Whether no render or decode is queued or in flight."""
        return not self._renders and not self._decodes

    def render(self, image_id: str, width: int | None = None, client: str = "") -> bytes:
        """PNG bytes of an image at `width` (None: full size; pass `effective_width`) for
        `client`, ahead of background work and fairly between clients.

        Raises `RenderUnavailable` (no wait slot free for the client, queue full, deadline
        passed, models missing), `FileNotFoundError` if the latent file is gone, `CodecError`
        if it is unreadable.
        """
        png = self.cache.get((image_id, width))
        if png is not None:
            self.metrics.cache_hits.inc()
            return png
        self.metrics.cache_misses.inc()
        try:
            with self.waits.slot(client) as free:
                if not free:
                    raise BusyError(
                        f"too many renders are waiting (at most {self.waits.per_client} from one "
                        f"address, {self.waits.total} in all); retry shortly"
                    )
                future = self._request(image_id, width, Priority.INTERACTIVE, client)
                try:
                    return future.result(timeout=self.timeout)
                except FutureTimeout:
                    raise DeadlineError(f"the render took longer than {self.timeout:g} s") from None
        except RenderUnavailable as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            raise

    def warm(
        self, image_id: str, size: tuple[int, int], widths: Iterable[int | None] | None = None
    ) -> None:
        """Start rendering `widths` (None: the full size; by default every thumbnail width
        and, up to `WARM_FULL_PIXELS`, the full size) of an image of `size` in the background,
        after any visitor's renders; returns at once."""
        if widths is None:
            full = [None] if size[0] * size[1] <= WARM_FULL_PIXELS else []
            widths = [*full, *thumbnail_widths(size[0])]
        try:
            for width in widths:
                self._request(image_id, width, Priority.BACKGROUND)
        except (RenderUnavailable, OSError, CodecError) as exc:
            log.info("not warming %s: %s", image_id, exc)

    def put_decoded(self, image_id: str, image: Image.Image) -> None:
        """Store an image decoded elsewhere (the encoder's reconstruction of an upload) as the
        full-size render and make the thumbnails from it, in the background, with no decoder
        pass; returns at once."""
        _, leader = self._decodes.claim((image_id, None))
        if leader:
            copy = image.convert("RGB")  # the caller may go on using its image
            fail = partial(self._decodes.fail, (image_id, None))
            self._on_pool(fail, self._store, (image_id, None), copy)
        self.warm(image_id, image.size, thumbnail_widths(image.width))

    def close(self) -> None:
        """Stop the decode thread (queued jobs fail, the pass in flight finishes, up to the
        decode timeout) and the PNG pool."""
        self.batcher.close(self.timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _request(
        self, image_id: str, width: int | None, priority: Priority, client: str = ""
    ) -> Future[bytes]:
        """The future of a render: joined to its flight, or a new flight this call starts."""
        key = (image_id, width)
        future, leader = self._renders.claim(key)
        if leader:
            try:
                self._start(key, priority, client)
            except Exception as exc:
                self._renders.fail(key, exc)
                raise
        if priority is Priority.INTERACTIVE:
            self._hurry(key, client)
        if not leader:
            self.metrics.coalesced.inc()
        return future

    def _start(self, key: Key, priority: Priority, client: str) -> None:
        """Settle a new flight from the cache, make it from the cached full size, or hang it on
        the image's decode: straight to a thumbnail's size, unless the full size is decoding."""
        image_id, width = key
        png = self.cache.get(key)
        if png is not None:  # cached just before this flight began
            self._renders.resolve(key, png)
            return
        full = self.cache.get((image_id, None)) if width is not None else None
        if full is not None:
            self._on_pool(partial(self._renders.fail, key), self._make_thumbnail, key, full)
            return
        codec = self.model.require()
        data = self._read_latent(image_id)
        header = LatentFile.from_bytes(data)
        if header.space != codec.decoder.space:
            raise LatentSpaceMismatchError(
                f"{image_id} is in the {header.space.name} latent space, the decoder "
                f"speaks {codec.decoder.space.name}"
            )
        direct = (
            width is not None
            and codec.thumbnail_decoder is not None
            and 2 * width <= header.width
            and (image_id, None) not in self._decodes  # else share the full size's decode
        )
        decode_key = (image_id, width if direct else None)
        with self._lock:
            self._waits_on[key] = decode_key
        self._decode(decode_key, codec, data, priority, client).add_done_callback(
            partial(self._finish, key)
        )

    def _decode(
        self, key: DecodeKey, codec: Codec, data: bytes, priority: Priority, client: str
    ) -> Future[Decoded]:
        """The image decoded (at full size, or straight to the thumbnail width `key` names):
        joined to its decode, or queued for the decoder."""
        future, leader = self._decodes.claim(key)
        if not leader:
            return future
        try:
            full = self.cache.get((key[0], None)) if key[1] is None else None
            if full is not None:
                self._decodes.resolve(key, Decoded(decode_png(full), full))
                return future
            header, latent = codec.unpack(data)
            interactive = priority is Priority.INTERACTIVE
            deadline = time.monotonic() + self.timeout if interactive else None
            job = self.batcher.submit(
                header, latent, priority, deadline, width=key[1], client=client
            )
        except Exception as exc:
            self._decodes.fail(key, exc)
            raise
        with self._lock:
            self._queued[key] = job
        job.future.add_done_callback(partial(self._decoded, key))
        return future

    def _hurry(self, key: Key, client: str) -> None:
        """A visitor waits for this render: move its queued decode ahead of background work."""
        with self._lock:
            job = self._queued.get(self._waits_on.get(key))
        if job is not None:
            self.batcher.promote(job, time.monotonic() + self.timeout, client)

    def _decoded(self, key: DecodeKey, job: Future[torch.Tensor]) -> None:
        """On the decode thread: hand the pixels to the PNG pool."""
        with self._lock:
            self._queued.pop(key, None)
        error = job.exception()
        if error is not None:
            self._decodes.fail(key, error)
        else:
            self._on_pool(partial(self._decodes.fail, key), self._store, key, job.result())

    def _store(self, key: DecodeKey, pixels: torch.Tensor | Image.Image) -> None:
        """Cache the full-size PNG of decoded pixels (not a thumbnail's, cached as its render),
        and settle the decode."""
        try:
            image = pixels if isinstance(pixels, Image.Image) else tensor_to_image(pixels)
            png = encode_png(image) if key[1] is None else None
        except Exception as exc:
            log.exception("rendering %s failed", key[0])
            self._decodes.fail(key, exc)
            return
        if png is not None:
            self.cache.put((key[0], None), png)
        self._decodes.resolve(key, Decoded(image, png))

    def _finish(self, key: Key, decode: Future[Decoded]) -> None:
        """Settle a render from its image's decode: the full size at once, a thumbnail on the
        pool."""
        with self._lock:
            self._waits_on.pop(key, None)
        error = decode.exception()
        if error is not None:
            self._renders.fail(key, error)
        elif key[1] is None:
            self._renders.resolve(key, decode.result().png)
        else:
            image = decode.result().image
            self._on_pool(partial(self._renders.fail, key), self._make_thumbnail, key, image)

    def _on_pool(self, fail: Callable[[BaseException], None], task: Callable, *args) -> None:
        """Run `task(*args)` on the PNG pool; once the pool is shut down (the renderer is
        closing), `fail` with why instead."""
        try:
            self._pool.submit(task, *args)
        except RuntimeError:
            fail(ModelUnavailableError("the render service is shutting down"))

    def _make_thumbnail(self, key: Key, full: Image.Image | bytes) -> None:
        """Render a thumbnail from the full-size image (or its PNG; the thumbnail decoder's
        image is already the thumbnail's size), cache it, settle it."""
        try:
            image = decode_png(full) if isinstance(full, bytes) else full
            png = encode_png(thumbnail(image, key[1]))
        except Exception as exc:
            log.exception("thumbnail %s failed", key)
            self._renders.fail(key, exc)
            return
        self.cache.put(key, png)
        self._renders.resolve(key, png)


def get_renderer(app: Flask | None = None) -> Renderer:
    """This process's renderer for the app, created (and the models loaded) on first use; a
    forked child makes its own."""
    app = app or current_app._get_current_object()

    def create() -> Renderer:
        renderer = Renderer(
            ModelHost(app.config["CODEC_FACTORY"]),
            app.extensions["latent_gallery.store"].read_latent,
            app.extensions["latent_gallery.cache"],
            app.extensions["latent_gallery.metrics"],
            app.extensions["latent_gallery.waits"],
            queue_size=app.config["RENDER_QUEUE"],
            batch=app.config["RENDER_BATCH"],
            timeout=app.config["DECODE_TIMEOUT"],
        )
        with contextlib.suppress(ModelUnavailableError):  # logged, kept for /healthz
            renderer.require_codec()
        return renderer

    return per_process(app, _EXTENSION, create)


def close_renderer(app: Flask) -> None:
    """Stop the app's renderer if this process started one."""
    renderer = pop_own(app, _EXTENSION)
    if renderer is not None:
        renderer.close()
