"""RenderService: latent files -> PNG bytes, decoded on demand, batched, coalesced, cached.

One service per process, created on first use (after gunicorn forks, so torch and CUDA are
never touched in the master). Its decode thread is the only caller of the decoder: it takes
jobs from a bounded queue, waits up to `BATCH_WINDOW_S` for up to `batch` jobs, groups them
by latent shape and runs one `codec.decode_latents` forward pass per group. PNG encoding and
thumbnail resizing run on a small pool beside it, so the model never waits on zlib.

Single-flight: every (image id, width) being rendered has one `Future` in `_flights`, and
every image being decoded one `_Job` in `_jobs`, both under one lock; a request for a key in
flight waits on its future instead of queueing work, so N concurrent requests cost one decode.

Thumbnails are made from the full-size decode (which is cached too), downsized with Lanczos.
Measured with TAESD on 4 Kodak images (768x512, CPU): full decode then resize is
25.8 dB (256 px) / 23.6 dB (512 px) PSNR against the downsized original; decoding an
area-downsampled latent instead is 3x / 1.6x faster (1.8 s / 3.3 s against 5.2 s) but loses
6.7 dB / 3.7 dB (blotchy colour, lost detail), so its quality does not hold. With the full
decode cached, a thumbnail costs a PNG read, a resize and a PNG write (~60 ms for 512 px on
2 busy CPU cores) instead of a ~6 s decode. Uploads warm the full size and every thumbnail
width in the background with one decode, so a gallery never waits on the model.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np
import torch
from flask import Flask, current_app
from PIL import Image

from codec import Codec, CodecError, LatentFile, LatentSpaceMismatchError
from codec.images import tensor_to_image

from .cache import ByteLRU
from .metrics import Metrics

log = logging.getLogger(__name__)

THUMB_WIDTHS = (256, 512)
BATCH_WINDOW_S = 0.005
BATCH_PIXELS = 1 << 21
"""Pixels one forward pass decodes at most. TAESD in fp32 needs about 1 GB of activations per
megapixel: a batch of 8 768x512 latents peaked 3.1 GB above the loaded model on a CPU, so a
same-shape batch is split to stay near 2 GB (5 such photos, 2 of 1024x1024)."""
PNG_COMPRESS_LEVEL = 1  # 3x faster than the default 6 for ~5% more bytes on decoded photos
RETRY_AFTER_S = 2
_EXTENSION = "latent_gallery.renderer"
_create_lock = threading.Lock()

Key = tuple[str, int | None]  # (image id, thumbnail width or None for full size)


class RenderUnavailable(Exception):
    """A render refused or abandoned: answered 503 with `Retry-After`."""

    reason = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.retry_after = RETRY_AFTER_S


class QueueFullError(RenderUnavailable):
    """The decode queue is full."""

    reason = "queue_full"


class DeadlineError(RenderUnavailable):
    """The decode did not finish within the deadline."""

    reason = "deadline"


class ModelUnavailableError(RenderUnavailable):
    """The models could not be loaded (the message says why)."""

    reason = "model_unavailable"


def effective_width(image_width: int, width: int | None) -> int | None:
    """The render width to use: None (full size) unless `width` makes the image smaller."""
    return width if width is not None and width < image_width else None


@dataclass(eq=False)
class _Job:
    """One image to decode, and the widths to render from that decode."""

    image_id: str
    widths: set[int | None]
    deadline: float
    header: LatentFile | None = None
    latent: np.ndarray | None = field(default=None, repr=False)


class RenderService:
    """Decode thread, bounded queue, micro-batching, single-flight and the PNG cache."""

    def __init__(
        self,
        make_codec: Callable[[], Codec],
        read_latent: Callable[[str], bytes],
        cache: ByteLRU,
        metrics: Metrics,
        *,
        queue_size: int = 64,
        batch: int = 8,
        timeout: float = 30.0,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.timeout = timeout
        self.batch = batch
        self._read_latent = read_latent
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._flights: dict[Key, Future] = {}
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self.codec: Codec | None = None
        self.error: str | None = None
        try:
            codec = make_codec()
            codec.load()
            self.codec = codec
            log.info("models loaded: decoder %s", codec.decoder.describe())
        except (CodecError, ValueError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load the models: %s", self.error)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render-png")
        self._thread = threading.Thread(target=self._run, name="render-decode", daemon=True)
        self._thread.start()

    def require_codec(self) -> Codec:
        """The loaded codec, or `ModelUnavailableError` naming why it is not."""
        if self.codec is None:
            raise ModelUnavailableError(f"the models are not loaded: {self.error}")
        return self.codec

    @property
    def version(self) -> str:
        """Identifies what a render looks like (the decoder's weights), for ETags."""
        return self.require_codec().decoder.decoder_fingerprint.hex()

    @property
    def queue_depth(self) -> int:
        """Decode jobs waiting for the model."""
        return self._queue.qsize()

    def idle(self) -> bool:
        """Whether no render is queued or in flight."""
        with self._lock:
            return not self._flights and not self._jobs

    def render(self, image_id: str, width: int | None = None) -> bytes:
        """PNG bytes of an image at `width` (None: full size; pass `effective_width`).

        Raises `RenderUnavailable` (queue full, deadline passed, models missing),
        `FileNotFoundError` if the latent file is gone, `CodecError` if it is unreadable.
        """
        key = (image_id, width)
        png = self.cache.get(key)
        if png is not None:
            self.metrics.cache_hits.inc()
            return png
        self.metrics.cache_misses.inc()
        try:
            future = self._request(image_id, [width])[0]
            try:
                return future.result(timeout=self.timeout)
            except FutureTimeout:
                raise DeadlineError(f"the render took longer than {self.timeout:g} s") from None
        except RenderUnavailable as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            raise

    def warm(self, image_id: str, image_width: int) -> None:
        """Start rendering the full size and every smaller thumbnail width; returns at once."""
        widths = [None, *(w for w in THUMB_WIDTHS if effective_width(image_width, w))]
        try:
            self._request(image_id, widths)
        except (RenderUnavailable, OSError, CodecError) as exc:
            log.info("not warming %s: %s", image_id, exc)

    def forget(self, image_id: str) -> None:
        """Drop a deleted image's renders from the cache."""
        self.cache.discard_where(lambda key: key[0] == image_id)

    def close(self) -> None:
        """Stop the decode thread (queued jobs are dropped, the batch in flight finishes, up to
        the decode timeout) and the PNG pool."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self._fail(job, ModelUnavailableError("the render service is shutting down"))
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None, timeout=5)
        self._thread.join(timeout=self.timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _request(self, image_id: str, widths: list[int | None]) -> list[Future]:
        """Futures of the renders of `widths`: cached, joined to a flight, made from the cached
        full size, or added to the image's pending decode (queued here if there is none)."""
        codec = self.require_codec()
        futures, from_png, new_job = [], [], None
        with self._lock:
            deadline = time.monotonic() + self.timeout
            job = self._jobs.get(image_id)
            for width in widths:
                key = (image_id, width)
                if key in self._flights:
                    self.metrics.coalesced.inc()
                    futures.append(self._flights[key])
                    if job is not None:
                        job.deadline = max(job.deadline, deadline)
                    continue
                future = Future()
                futures.append(future)
                cached = self.cache.get(key)
                if cached is not None:
                    future.set_result(cached)
                    continue
                self._flights[key] = future
                full = self.cache.get((image_id, None)) if job is None else None
                if full is not None:
                    from_png.append((width, full))
                    continue
                if job is None:
                    job = new_job = self._jobs[image_id] = _Job(image_id, set(), deadline)
                job.widths.add(width)
                job.deadline = max(job.deadline, deadline)
        for width, full in from_png:
            self._pool.submit(self._thumbnail_from_png, image_id, width, full)
        if new_job is not None:
            self._enqueue(codec, new_job)
        return futures

    def _enqueue(self, codec: Codec, job: _Job) -> None:
        try:
            job.header, job.latent = codec.unpack(self._read_latent(job.image_id))
            if job.header.space != codec.decoder.space:
                raise LatentSpaceMismatchError(
                    f"{job.image_id} is in the {job.header.space.name} latent space, the decoder "
                    f"speaks {codec.decoder.space.name}"
                )
            self._queue.put_nowait(job)
        except queue.Full:
            error = QueueFullError("too many images are being rendered; try again shortly")
            self._fail(job, error)
            raise error from None
        except (OSError, CodecError) as exc:
            self._fail(job, exc)
            raise

    def _run(self) -> None:
        """The decode thread: batches of same-shape latents through the decoder."""
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch, stop = [job], False
            end = time.monotonic() + BATCH_WINDOW_S
            while len(batch) < self.batch:
                try:
                    item = self._queue.get(timeout=max(end - time.monotonic(), 1e-4))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._decode(batch)
            if stop:
                return

    def _decode(self, batch: list[_Job]) -> None:
        now = time.monotonic()
        groups: dict[tuple[int, ...], list[_Job]] = {}
        for job in batch:
            if job.deadline < now:
                self._fail(job, DeadlineError("the render waited in the queue past its deadline"))
            else:
                groups.setdefault(job.latent.shape, []).append(job)
        chunks = [
            jobs[i : i + size]
            for shape, jobs in groups.items()
            for size in [self._batch_for(shape)]
            for i in range(0, len(jobs), size)
        ]
        for jobs in chunks:
            start = time.perf_counter()
            try:
                latents = torch.from_numpy(np.stack([job.latent for job in jobs]))
                pixels = self.codec.decode_latents(latents)
            except Exception as exc:
                log.exception("decoding %d latents failed", len(jobs))
                for job in jobs:
                    self._fail(job, exc)
                continue
            self.metrics.decode_seconds.observe(time.perf_counter() - start)
            self.metrics.batch_size.observe(len(jobs))
            self.metrics.decodes.inc(len(jobs))
            for row, job in enumerate(jobs):
                crop = pixels[row, :, : job.header.height, : job.header.width]
                self._pool.submit(self._finish, job, crop)

    def _batch_for(self, shape: tuple[int, ...]) -> int:
        """Latents of `shape` decoded in one forward pass: at most `BATCH_PIXELS` pixels of
        them (of one tile each, for latents larger than the decoder's tile)."""
        scale = self.codec.decoder.space.downscale
        tile = self.codec.settings.tile
        pixels = min(shape[-2] * scale, tile) * min(shape[-1] * scale, tile)
        return max(1, BATCH_PIXELS // pixels)

    def _finish(self, job: _Job, pixels: torch.Tensor) -> None:
        """PNG of the full size, then of the thumbnails asked for while it decoded."""
        try:
            image = tensor_to_image(pixels)
            self._resolve((job.image_id, None), encode_png(image))
            with self._lock:
                if self._jobs.get(job.image_id) is job:
                    del self._jobs[job.image_id]
                widths = sorted(w for w in job.widths if w is not None)
            for width in widths:
                self._resolve((job.image_id, width), encode_png(resize(image, width)))
        except Exception as exc:
            log.exception("rendering %s failed", job.image_id)
            self._fail(job, exc)

    def _thumbnail_from_png(self, image_id: str, width: int, full: bytes) -> None:
        key = (image_id, width)
        try:
            with Image.open(io.BytesIO(full), formats=["PNG"]) as image:
                self._resolve(key, encode_png(resize(image, width)))
        except Exception as exc:
            log.exception("thumbnail %s failed", key)
            self._resolve(key, error=exc)

    def _resolve(
        self, key: Key, png: bytes | None = None, error: BaseException | None = None
    ) -> None:
        """Cache a render, then hand it (or the error) to everyone waiting for it."""
        if png is not None:
            self.cache.put(key, png)
        with self._lock:
            future = self._flights.pop(key, None)
        if future is not None:
            if error is None:
                future.set_result(png)
            else:
                future.set_exception(error)

    def _fail(self, job: _Job, error: BaseException) -> None:
        with self._lock:
            if self._jobs.get(job.image_id) is job:
                del self._jobs[job.image_id]
            widths = list(job.widths)
        for width in widths:
            self._resolve((job.image_id, width), error=error)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes without metadata."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def resize(image: Image.Image, width: int) -> Image.Image:
    """The image scaled to `width` (aspect kept), Lanczos."""
    height = max(1, round(image.height * width / image.width))
    return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def get_renderer(app: Flask | None = None) -> RenderService:
    """This process's render service for the app, created (and the models loaded) on first use;
    a forked child makes its own."""
    app = app or current_app._get_current_object()
    entry = app.extensions.get(_EXTENSION)
    if entry is None or entry[0] != os.getpid():
        with _create_lock:
            entry = app.extensions.get(_EXTENSION)
            if entry is None or entry[0] != os.getpid():
                service = RenderService(
                    app.config["CODEC_FACTORY"],
                    app.extensions["latent_gallery.store"].read_latent,
                    app.extensions["latent_gallery.cache"],
                    app.extensions["latent_gallery.metrics"],
                    queue_size=app.config["RENDER_QUEUE"],
                    batch=app.config["RENDER_BATCH"],
                    timeout=app.config["DECODE_TIMEOUT"],
                )
                entry = app.extensions[_EXTENSION] = (os.getpid(), service)
    return entry[1]


def close_renderer(app: Flask) -> None:
    """Stop the app's render service if this process started one."""
    entry = app.extensions.pop(_EXTENSION, None)
    if entry is not None and entry[0] == os.getpid():
        entry[1].close()
