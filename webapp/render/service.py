"""The render service: a stored image at a width, as PNG or AVIF bytes, from the cache or a decode.

A visitor's request walks `Renderer.render` top to bottom:

1. the cache, by (image id, width, format): a hit is the answer;
2. the `Source` of its pixels (`_source`): a large image keeps a display latent beside its
   full one (`sizes.display_size`, a quarter of a 2048-px photo's pixels), which serves every
   width up to its own; the full latent serves the full size and wider. A width at most half
   its latent's is decoded straight to that size by the codec's thumbnail decoder (a 256-px
   thumbnail of a 1024-px display latent costs a fifth of the latent's own decode), unless the
   latent's own-size decode is cached or under way: then it is made from that;
3. a cached PNG of those pixels (the same render as PNG, or the latent's own-size decode): the
   render is made from it, with no decode;
4. else the source's one flight: the first request reads and parses the latent file and queues
   one job on the decode thread (`batcher.DecodeBatcher`; a visitor's job goes ahead of
   background work); every request for any width from that source waits on the same flight.
   A decode at the latent's own size is cached as a PNG before the flight ends, so that every
   smaller width and other format is made later without a decode;
5. the render made from the decoded image (`formats`: resize, then PNG or AVIF), once per key
   however many ask (`SingleFlight`), at most `ENCODE_THREADS` at once, and cached.

A visitor holds one of its client's wait slots (`admission.WaitSlots`) and waits up to the
decode timeout; when that passes while its decode is in the model, up to as long again rather
than losing a render under way. Background work (`warm` after a start or an upload,
`put_decoded` with an upload's own reconstructions) is finished on a small pool of threads, so
the decode thread never waits on an image encoder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from PIL import Image

from codec import CodecError, unpack
from codec.images import tensor_to_image

from ..admission import BusyError, WaitSlots
from ..cache import ByteLRU
from ..codec_host import CodecHost
from ..metadata import ImageRecord
from ..metrics import Metrics
from ..unavailable import DeadlineError, ModelUnavailableError, RenderUnavailable
from .batcher import DecodeBatcher, DecodeJob, Priority
from .formats import ENCODERS, decode_png, encode_png, thumbnail
from .singleflight import SingleFlight
from .sizes import THUMB_WIDTHS, display_width

log = logging.getLogger(__name__)

PAGE_FORMAT = "avif"
"""The format pages show, which warming renders."""
ENCODE_THREADS = 2
"""Renders encoded (resize, PNG, AVIF) at once, by visitors' threads and the pool together: the
rest of the CPU stays with the decode thread (12 AVIF encodes at once beside it slowed a cold
gallery page on 2 cores)."""
WARM_FULL_PIXELS = 1_500_000
"""Largest image whose full size is decoded in the background (about 5 s on a 2-core CPU):
a visitor who arrives meanwhile waits for the decode in flight, so larger ones are decoded
only when someone asks for them."""

Key = tuple[str, int | None, str]  # (image id, width or None for the full size, format)
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """Which decode gives a render's pixels."""

    image_id: str
    display: bool
    """From the image's display latent (else its full latent)."""
    own_width: int | None
    """The width of the latent's own-size decode: the display width, or None (full size)."""
    width: int | None = None
    """Decoded straight to this width by the thumbnail decoder; None: at the latent's size."""

    @property
    def png_key(self) -> Key:
        """The cache key of the latent's own-size decode as a PNG."""
        return self.image_id, self.own_width, "png"


@dataclass(eq=False)
class Flight:
    """One decode from a source, which renders of every width from it wait on."""

    image: Future[Image.Image] = field(default_factory=Future)
    job: DecodeJob | None = None
    """Its job on the decode thread (None until queued, or for an upload's reconstruction)."""


class Renderer:
    """Renders of stored images: the cache, one flight per decode, priorities, formats."""

    def __init__(
        self,
        host: CodecHost,
        read_latent: Callable[[str, bool], bytes],
        cache: ByteLRU,
        metrics: Metrics,
        waits: WaitSlots,
        *,
        queue_size: int = 64,
        batch: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.cache = cache
        self.metrics = metrics
        self.waits = waits
        self.timeout = timeout
        self._read_latent = read_latent
        self._flights: dict[Source, Flight] = {}
        self._made: SingleFlight[Key, bytes] = SingleFlight()
        self._tasks = 0  # pool tasks queued or running
        self._lock = threading.Lock()
        self.batcher = DecodeBatcher(host.require, metrics, queue_size=queue_size, batch=batch)
        self._encoders = threading.BoundedSemaphore(ENCODE_THREADS)
        self._pool = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="render-encode")

    @property
    def queue_depth(self) -> int:
        """Decode jobs waiting for the model."""
        return self.batcher.queue_depth

    def idle(self) -> bool:
        """Whether no decode or render is queued or under way."""
        return not self._flights and not self._made and not self._tasks

    def render(
        self, record: ImageRecord, width: int | None = None, fmt: str = "png", client: str = ""
    ) -> bytes:
        """Bytes of an image at `width` (None: full size; pass `effective_width`) in `fmt`
        (`ENCODERS`) for `client`, ahead of background work and fairly between clients.

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
                source = self._source(record, width)
                png = self._cached_png(key, source)
                if png is not None:
                    return self._make(key, png)
                flight = self._fly(record, source, Priority.INTERACTIVE, client)
                return self._make(key, self._wait(flight))
        except RenderUnavailable as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            raise

    def warm(self, record: ImageRecord, widths: Iterable[int | None] | None = None) -> None:
        """Start rendering `widths` (None: the full size; by default `_warm_widths`) of an image
        as pages show them, in the background, after any visitor's renders; returns at once."""
        try:
            for width in self._warm_widths(record) if widths is None else widths:
                key = (record.id, width, PAGE_FORMAT)
                if key in self.cache:
                    continue
                source = self._source(record, width)
                png = self._cached_png(key, source)
                if png is not None:
                    self._submit(self._make_quietly, key, png)
                else:
                    flight = self._fly(record, source, Priority.BACKGROUND)
                    flight.image.add_done_callback(lambda done, key=key: self._then_make(key, done))
        except (RenderUnavailable, OSError, CodecError, RuntimeError) as exc:
            log.info("not warming %s: %s", record.id, exc)

    def put_decoded(
        self, record: ImageRecord, image: Image.Image, display: Image.Image | None = None
    ) -> None:
        """Make an upload's renders as pages show them from the encoder's reconstructions of
        its latent (`image`) and display latent (`display`, given when the record has one), in
        the background, with no decoder pass; returns at once."""
        pictures = {False: image.convert("RGB")}  # a copy: the caller may go on using its image
        if display is not None:
            pictures[True] = display.convert("RGB")
        for source in {self._source(record, w, direct=False) for w in self._warm_widths(record)}:
            with self._lock:
                if source in self._flights:
                    continue
                flight = self._flights[source] = Flight()
            self._settle_on_pool(source, flight, pictures[source.display])
        self.warm(record)

    def close(self) -> None:
        """Stop the decode thread (queued jobs fail, the pass in flight finishes, up to the
        decode timeout) and the pool."""
        self.batcher.close(self.timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _source(self, record: ImageRecord, width: int | None, direct: bool = True) -> Source:
        """Where a render of `width` comes from: the display latent for widths up to its own,
        else the full latent; straight to `width` on the thumbnail decoder (`direct`) when that
        is at most half the latent's width, it has one, and the latent's own-size decode is
        neither cached nor under way."""
        display = display_width(record.width, record.height)
        from_display = record.display_bytes is not None and width is not None
        from_display = from_display and display is not None and width <= display
        own = display if from_display else None
        whole = Source(record.id, from_display, own)
        straight = (
            direct
            and width is not None
            and 2 * width <= (own or record.width)
            and whole not in self._flights
            and whole.png_key not in self.cache
            and self.host.require().thumbnail_decoder is not None
        )
        return Source(record.id, from_display, own, width) if straight else whole

    def _cached_png(self, key: Key, source: Source) -> bytes | None:
        """A cached PNG a render can be made from without a decode: its own pixels as PNG, or
        its source's own-size decode."""
        image_id, width, fmt = key
        keys = [(image_id, width, "png")] if fmt != "png" else []
        keys += [source.png_key] if source.width is None and source.png_key != key else []
        return next((png for k in keys if (png := self.cache.get(k)) is not None), None)

    def _fly(
        self, record: ImageRecord, source: Source, priority: Priority, client: str = ""
    ) -> Flight:
        """The source's flight: joined, or started (its latent read, parsed and queued)."""
        with self._lock:
            flight = self._flights.get(source)
            leader = flight is None
            if leader:
                flight = self._flights[source] = Flight()
        if not leader:
            self.metrics.coalesced.inc()
        else:
            try:
                codec = self.host.require()
                header, latent = unpack(
                    self._read_latent(record.id, source.display), codec.decoder.space
                )
                interactive = priority is Priority.INTERACTIVE
                deadline = time.monotonic() + self.timeout if interactive else None
                flight.job = self.batcher.submit(
                    header, latent, priority, deadline, width=source.width, client=client
                )
            except Exception as exc:
                self._land(source, flight, exc)
                raise
            flight.job.future.add_done_callback(lambda job: self._decoded(source, flight, job))
        if priority is Priority.INTERACTIVE and flight.job is not None:
            self.batcher.promote(flight.job, time.monotonic() + self.timeout, client)
        return flight

    def _wait(self, flight: Flight) -> Image.Image:
        """A visitor's wait for its flight: up to the timeout, and as long again if its decode
        is in the model by then."""
        try:
            return flight.image.result(timeout=self.timeout)
        except FutureTimeout:
            if flight.job is None or not flight.job.future.running():
                raise DeadlineError(f"the render took longer than {self.timeout:g} s") from None
        try:
            return flight.image.result(timeout=self.timeout)
        except FutureTimeout:
            raise DeadlineError(
                f"the render's decode took longer than {self.timeout:g} s"
            ) from None

    def _decoded(self, source: Source, flight: Flight, job: Future[torch.Tensor]) -> None:
        """On the decode thread: hand the pixels to the pool."""
        error = job.exception()
        if error is not None:
            self._land(source, flight, error)
        else:
            self._settle_on_pool(source, flight, job.result())

    def _settle_on_pool(
        self, source: Source, flight: Flight, pixels: torch.Tensor | Image.Image
    ) -> None:
        """`_settle` on the pool; once the pool is shut down, end the flight with why."""
        try:
            self._submit(self._settle, source, flight, pixels)
        except RuntimeError:
            self._land(source, flight, ModelUnavailableError("the render service is shutting down"))

    def _settle(self, source: Source, flight: Flight, pixels: torch.Tensor | Image.Image) -> None:
        """End a flight with its image; an own-size decode is first cached as a PNG (before the
        flight ends, so that a render asked for just after finds it: 40 ms for a 1024×576 PNG
        beside a 1–2.5 s decode)."""
        try:
            image = pixels if isinstance(pixels, Image.Image) else tensor_to_image(pixels)
            if source.width is None:
                self.cache.put(source.png_key, self._encoding(encode_png, image))
        except Exception as exc:
            log.exception("rendering %s failed", source)
            self._land(source, flight, exc)
            return
        self._land(source, flight, image)

    def _land(self, source: Source, flight: Flight, outcome: Image.Image | BaseException) -> None:
        """End a flight: its source is free again, its waiters get the image or the error."""
        with self._lock:
            if self._flights.get(source) is flight:
                del self._flights[source]
        if isinstance(outcome, BaseException):
            flight.image.set_exception(outcome)
        else:
            flight.image.set_result(outcome)

    def _make(self, key: Key, source: Image.Image | bytes) -> bytes:
        """The render of `key` made from an image (or a PNG) of the same or more pixels,
        scaled to its width, once however many ask, and cached."""
        future, leader = self._made.claim(key)
        if not leader:
            try:
                return future.result(timeout=self.timeout)
            except FutureTimeout:
                raise DeadlineError(f"the render took longer than {self.timeout:g} s") from None
        _, width, fmt = key
        try:
            data = self.cache.get(key)
            if data is None:
                image = decode_png(source) if isinstance(source, bytes) else source
                if width is not None and image.width != width:
                    image = self._encoding(thumbnail, image, width)
                data = self._encoding(ENCODERS[fmt], image)
                self.cache.put(key, data)
        except Exception as exc:
            self._made.fail(key, exc)
            raise
        self._made.resolve(key, data)
        return data

    def _encoding(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` in one of the `ENCODE_THREADS` encode slots, waited for up to the
        decode timeout."""
        if not self._encoders.acquire(timeout=self.timeout):
            raise DeadlineError(f"the render took longer than {self.timeout:g} s")
        try:
            return work(*args)
        finally:
            self._encoders.release()

    def _make_quietly(self, key: Key, source: Image.Image | bytes) -> None:
        """`_make` in the background, from an image or a PNG; a failure is logged."""
        try:
            self._make(key, source)
        except Exception:
            log.exception("rendering %s failed", key)

    def _then_make(self, key: Key, flight: Future[Image.Image]) -> None:
        """Once a background flight lands: make its render on the pool."""
        if flight.exception() is None:
            try:
                self._submit(self._make_quietly, key, flight.result())
            except RuntimeError:
                log.info("not rendering %s: the render service is shutting down", key)

    def _submit(self, task: Callable[..., None], *args: object) -> None:
        """Run `task(*args)` on the pool, counted until it ends (`idle`); `RuntimeError` once
        the pool is shut down."""
        with self._lock:
            self._tasks += 1

        def run() -> None:
            try:
                task(*args)
            finally:
                with self._lock:
                    self._tasks -= 1

        try:
            self._pool.submit(run)
        except RuntimeError:
            with self._lock:
                self._tasks -= 1
            raise

    def _warm_widths(self, record: ImageRecord) -> list[int | None]:
        """The renders warming makes, largest first, so that the smaller share its decode:
        the full size if small, and every render width."""
        full = [None] if record.width * record.height <= WARM_FULL_PIXELS else []
        display = display_width(record.width, record.height)
        thumbnails = [w for w in THUMB_WIDTHS if w < record.width]
        return [*full, *([display] if display else []), *reversed(thumbnails)]
