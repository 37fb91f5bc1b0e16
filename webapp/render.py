"""Renderer: latent files -> PNG or AVIF bytes on demand, cached; the facade over the render pieces.

- `model_host.ModelHost` loads the codec on first use (a failure retried with backoff);
- `decode_batcher.DecodeBatcher` owns the decoder: one thread, a bounded priority queue,
  same-shape batches, deadlines;
- `singleflight.SingleFlight` lets concurrent requests for one render (image, width, format)
  and for one decode share a single computation: N requests cost one decode;
- `png` and `avif` make the bytes and thumbnails; `cache.ByteLRU` keeps them, `metrics.Metrics`
  counts.

A render is served from the cache, or made from a cached PNG of the same pixels (another
format, or a thumbnail of the full size), or else from one decode of a latent (INTERACTIVE
for a visitor, BACKGROUND for warming), on a small pool of threads, so the model never waits
on an image encoder. Which decode (`_plan`): a large image keeps a display latent beside its
full one (`png.display_size`, a quarter of a 2048-px photo's pixels), which serves every width
up to its own; the full latent serves the full size and wider. A width no more than half its
latent's is decoded straight to that size by the thumbnail decoder when the codec has one
(`codec.thumbnail_decoder`): a 256-px thumbnail of a 1024-px display latent costs a fifth of
that latent's full decode. `put_decoded` makes an upload's renders from the encoder's own
reconstructions, with no decoder pass. One renderer per process (`get_renderer`), created on
first use, after gunicorn forks, so torch and CUDA are never touched in the master.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial

import torch
from flask import Flask, current_app
from PIL import Image

from codec import Codec, CodecError, LatentSpaceMismatchError
from codec.images import tensor_to_image

from .admission import BusyError, WaitSlots
from .avif import encode_avif
from .cache import ByteLRU
from .decode_batcher import DecodeBatcher, DecodeJob, Priority
from .metadata import ImageRecord
from .metrics import Metrics
from .model_host import ModelHost
from .per_process import per_process, pop_own
from .png import THUMB_WIDTHS, decode_png, display_width, encode_png, thumbnail
from .singleflight import SingleFlight
from .unavailable import DeadlineError, ModelUnavailableError, RenderUnavailable

log = logging.getLogger(__name__)

_EXTENSION = "latent_gallery.renderer"
PAGE_FORMAT = "avif"
"""The format pages show, which warming renders."""
ENCODERS: dict[str, Callable[[Image.Image], bytes]] = {"png": encode_png, "avif": encode_avif}
WARM_FULL_PIXELS = 1_500_000
"""Largest image whose full size is decoded in the background (about 5 s on a 2-core CPU):
a visitor who arrives meanwhile waits for the decode in flight, so larger ones are decoded
only when someone asks for them."""

Key = tuple[str, int | None, str]  # (image id, width or None for full size, format)
DecodeKey = tuple[str, bool, int | None]
"""(image id, whether from its display latent, width decoded straight to or None for the
latent's own size)."""


class Renderer:
    """Renders of stored images: cache, single-flight, decode priorities, thumbnails, formats."""

    def __init__(
        self,
        model: ModelHost,
        read_latent: Callable[[str, bool], bytes],
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
        self._decodes: SingleFlight[DecodeKey, Image.Image] = SingleFlight()
        self._queued: dict[DecodeKey, DecodeJob] = {}
        self._waits_on: dict[Key, DecodeKey] = {}
        self._lock = threading.Lock()
        self.batcher = DecodeBatcher(model.require, metrics, queue_size=queue_size, batch=batch)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render-encode")

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

    def render(
        self, record: ImageRecord, width: int | None = None, fmt: str = "png", client: str = ""
    ) -> bytes:
        """Bytes of an image at `width` (None: full size; pass `effective_width`) in `fmt`
        (`ENCODERS`) for `client`, ahead of background work and fairly between clients.

        A visitor waits up to the decode timeout; when it passes while the decode is in the
        model, up to that long again, rather than losing a render that is under way.
        Raises `RenderUnavailable` (no wait slot free for the client, queue full, deadline
        passed, models missing), `FileNotFoundError` if the latent file is gone, `CodecError`
        if it is unreadable.
        """
        key = (record.id, width, fmt)
        data = self.cache.get(key)
        if data is not None:
            self.metrics.cache_hits.inc()
            return data
        self.metrics.cache_misses.inc()
        try:
            with self.waits.slot(client) as free:
                if not free:
                    raise BusyError(
                        f"too many renders are waiting (at most {self.waits.per_client} from one "
                        f"address, {self.waits.total} in all); retry shortly"
                    )
                future = self._request(record, width, fmt, Priority.INTERACTIVE, client)
                try:
                    return future.result(timeout=self.timeout)
                except FutureTimeout:
                    if not self._in_model(key):
                        raise DeadlineError(
                            f"the render took longer than {self.timeout:g} s"
                        ) from None
                try:
                    return future.result(timeout=self.timeout)
                except FutureTimeout:
                    raise DeadlineError(
                        f"the render's decode took longer than {self.timeout:g} s"
                    ) from None
        except RenderUnavailable as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            raise

    def warm(self, record: ImageRecord, widths: Iterable[int | None] | None = None) -> None:
        """Start rendering `widths` (None: the full size; by default every render width and,
        up to `WARM_FULL_PIXELS`, the full size) of an image as pages show them, in the
        background, after any visitor's renders; returns at once."""
        try:
            for width in self._warm_widths(record) if widths is None else widths:
                self._request(record, width, PAGE_FORMAT, Priority.BACKGROUND)
        except (RenderUnavailable, OSError, CodecError) as exc:
            log.info("not warming %s: %s", record.id, exc)

    def put_decoded(
        self, record: ImageRecord, image: Image.Image, display: Image.Image | None = None
    ) -> None:
        """Make an upload's renders as pages show them from the encoder's reconstructions of
        its latent (`image`) and display latent (`display`), in the background, with no
        decoder pass; returns at once."""
        image = image.convert("RGB")  # a copy: the caller may go on using its image
        display = display.convert("RGB") if display is not None else None
        for width in self._warm_widths(record):
            key = (record.id, width, PAGE_FORMAT)
            _, leader = self._renders.claim(key)
            if leader:
                source = display if display is not None and width is not None else image
                self._on_pool(partial(self._renders.fail, key), self._make, key, source)

    def close(self) -> None:
        """Stop the decode thread (queued jobs fail, the pass in flight finishes, up to the
        decode timeout) and the encode pool."""
        self.batcher.close(self.timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _warm_widths(self, record: ImageRecord) -> list[int | None]:
        """The renders warming makes, largest first, so that the smaller share its decode:
        the full size if small, and every render width."""
        full = [None] if record.width * record.height <= WARM_FULL_PIXELS else []
        display = display_width(record.width, record.height)
        thumbnails = [w for w in THUMB_WIDTHS if w < record.width]
        return [*full, *([display] if display else []), *reversed(thumbnails)]

    def _request(
        self,
        record: ImageRecord,
        width: int | None,
        fmt: str,
        priority: Priority,
        client: str = "",
    ) -> Future[bytes]:
        """The future of a render: joined to its flight, or a new flight this call starts."""
        key = (record.id, width, fmt)
        future, leader = self._renders.claim(key)
        if leader:
            try:
                self._start(record, key, priority, client)
            except Exception as exc:
                self._renders.fail(key, exc)
                raise
        if priority is Priority.INTERACTIVE:
            self._hurry(key, client)
        if not leader:
            self.metrics.coalesced.inc()
        return future

    def _start(self, record: ImageRecord, key: Key, priority: Priority, client: str) -> None:
        """Settle a new flight from the cache, make it from a cached PNG of its pixels, or hang
        it on the decode that `_plan` picks."""
        data = self.cache.get(key)
        if data is not None:  # cached just before this flight began
            self._renders.resolve(key, data)
            return
        codec = self.model.require()
        plan = self._plan(record, key[1], codec)
        png = self._cached_png(record, key, plan)
        if png is not None:
            self._on_pool(partial(self._renders.fail, key), self._make, key, png)
            return
        with self._lock:
            self._waits_on[key] = plan
        self._decode(plan, codec, priority, client).add_done_callback(partial(self._finish, key))

    def _plan(self, record: ImageRecord, width: int | None, codec: Codec) -> DecodeKey:
        """The decode a render of `width` comes from: the display latent for widths up to its
        own, else the full latent; straight to `width` by the thumbnail decoder when that is
        at most half the latent's width (unless that latent's own-size decode is under way)."""
        display = display_width(record.width, record.height)
        from_display = record.display_bytes is not None and width is not None
        from_display = from_display and display is not None and width <= display
        latent_width = display if from_display else record.width
        direct = (
            width is not None
            and codec.thumbnail_decoder is not None
            and 2 * width <= latent_width
            and (record.id, from_display, None) not in self._decodes
        )
        return record.id, from_display, width if direct else None

    def _cached_png(self, record: ImageRecord, key: Key, plan: DecodeKey) -> bytes | None:
        """A cached PNG this render can be made from without a decode: its own pixels, or its
        latent's own-size decode (`_settle`)."""
        image_id, width, fmt = key
        whole = display_width(record.width, record.height) if plan[1] else None
        keys = [(image_id, width, "png")] if fmt != "png" else []
        keys += [(image_id, whole, "png")] if whole != width else []
        return next((png for k in keys if (png := self.cache.get(k)) is not None), None)

    def _decode(
        self, key: DecodeKey, codec: Codec, priority: Priority, client: str
    ) -> Future[Image.Image]:
        """The image decoded as `key` says: joined to its decode, or queued for the decoder."""
        future, leader = self._decodes.claim(key)
        if not leader:
            self.metrics.coalesced.inc()
            return future
        image_id, from_display, width = key
        try:
            header, latent = codec.unpack(self._read_latent(image_id, from_display))
            if header.space != codec.decoder.space:
                raise LatentSpaceMismatchError(
                    f"{image_id} is in the {header.space.name} latent space, the decoder "
                    f"speaks {codec.decoder.space.name}"
                )
            interactive = priority is Priority.INTERACTIVE
            deadline = time.monotonic() + self.timeout if interactive else None
            job = self.batcher.submit(
                header, latent, priority, deadline, width=width, client=client
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

    def _in_model(self, key: Key) -> bool:
        """Whether the decode this render waits for is in the model now."""
        with self._lock:
            job = self._queued.get(self._waits_on.get(key))
        return job is not None and job.future.running()

    def _decoded(self, key: DecodeKey, job: Future[torch.Tensor]) -> None:
        """On the decode thread: hand the pixels to the pool."""
        with self._lock:
            self._queued.pop(key, None)
        error = job.exception()
        if error is not None:
            self._decodes.fail(key, error)
            return
        self._on_pool(partial(self._decodes.fail, key), self._settle, key, job.result())

    def _settle(self, key: DecodeKey, pixels: torch.Tensor) -> None:
        """Settle a decode with its image; a latent's own-size decode is first cached as a PNG
        render (the full size, or the display render), which every smaller render and other
        format can be made from later without a decode (before settling, so that a render
        asked for just after finds it: 40 ms for a 1024×576 PNG beside a 1–2.5 s decode)."""
        image_id, from_display, width = key
        try:
            image = tensor_to_image(pixels)
            if width is None:
                self.cache.put((image_id, image.width if from_display else None, "png"),
                               encode_png(image))  # fmt: skip
        except Exception as exc:
            log.exception("rendering %s failed", image_id)
            self._decodes.fail(key, exc)
            return
        self._decodes.resolve(key, image)

    def _finish(self, key: Key, decode: Future[Image.Image]) -> None:
        """Settle a render from its decode, on the pool."""
        with self._lock:
            self._waits_on.pop(key, None)
        error = decode.exception()
        if error is not None:
            self._renders.fail(key, error)
        else:
            self._on_pool(partial(self._renders.fail, key), self._make, key, decode.result())

    def _on_pool(self, fail: Callable[[BaseException], None], task: Callable, *args) -> None:
        """Run `task(*args)` on the pool; once the pool is shut down (the renderer is
        closing), `fail` with why instead."""
        try:
            self._pool.submit(task, *args)
        except RuntimeError:
            fail(ModelUnavailableError("the render service is shutting down"))

    def _make(self, key: Key, source: Image.Image | bytes) -> None:
        """Encode a render from an image (or PNG) of the same or more pixels, scaled to its
        width; cache it, settle it."""
        _, width, fmt = key
        try:
            image = decode_png(source) if isinstance(source, bytes) else source
            if width is not None and image.width != width:
                image = thumbnail(image, width)
            data = ENCODERS[fmt](image)
        except Exception as exc:
            log.exception("rendering %s failed", key)
            self._renders.fail(key, exc)
            return
        self.cache.put(key, data)
        self._renders.resolve(key, data)


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
