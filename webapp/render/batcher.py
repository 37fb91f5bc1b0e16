"""The decode thread: latents -> pixels, visitors first, in batches, within deadlines.

One thread is the only caller of the decoder. Jobs wait in a bounded queue with two
priorities: INTERACTIVE (a visitor waiting for a PNG) ahead of BACKGROUND (warming after an
upload or a start); a queued job that a visitor asks for moves up (`promote`). The thread
takes the first interactive job, waits up to `BATCH_WINDOW_S` for up to `batch` in all
(`auto`: `auto_batch`, by the decoder's device), groups them by latent shape and scale (full,
or a thumbnail's on the thumbnail decoder) and runs one `codec.decode_latents` pass per group of at
most `BATCH_PIXELS`. Background jobs go one per pass, when no visitor waits: background work
never lengthens a visitor's pass, and a visitor who arrives waits for at most one background
decode. Visitors' jobs are served fairly between clients (start-time fair queueing: a job's
tag is one past its client's last tag, or past the tag last served if that is later), so one
client's burst does not delay another's first render by more than a decode or two. A job
whose deadline passed while it waited fails with `DeadlineError` instead; background jobs
have none. A full queue refuses new jobs with `QueueFullError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch

from codec import Codec, LatentFile
from codec.images import thumbnail_size

from ..metrics import Metrics
from ..unavailable import DeadlineError, ModelUnavailableError, QueueFullError

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.005
BATCH_PIXELS = 1 << 21
"""Pixels one forward pass decodes at most. TAESD in fp32 needs about 1 GB of activations per
megapixel: a batch of 8 768x512 latents peaked 3.1 GB above the loaded model on a CPU, so a
same-shape batch is split to stay near 2 GB (5 such photos, 2 of 1024x1024)."""


def auto_batch(device: torch.device) -> int:
    """Latents per forward pass by default: 8 on an accelerator, where a batch raises the
    throughput (an H100 in fp16: 4.7 ms a 768x512 decode alone, 3.2 ms each in fours); 1 on
    a CPU, where the convolutions already fill the cores at one image, so a batch only delays
    its first image (2-core AVX-512 EPYC: 2.8 thumbnail decodes/s alone, 2.7 in twos; full
    decodes 0.8/s against 0.6-0.7 in twos to eights; `benchmarks.decode_speed`)."""
    return 1 if device.type == "cpu" else 8


class Priority(IntEnum):
    """Decode order: lower first."""

    INTERACTIVE = 0
    BACKGROUND = 1


@dataclass(eq=False)
class DecodeJob:
    """One latent to decode; `future` gets its pixels `(3, H, W)` in [0, 1], cropped to the
    image, or with `width` to its thumbnail of that width, decoded straight to that size."""

    header: LatentFile
    latent: np.ndarray = field(repr=False)
    priority: Priority
    deadline: float | None
    width: int | None = None
    client: str = ""
    """Who waits for it (a client address; "" for background work), for fair order."""
    tag: int = 0
    """Its place in the fair order of visitors' jobs (set when it becomes interactive)."""
    future: Future[torch.Tensor] = field(default_factory=Future, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the pixels the job's future gets."""
        width, height = self.header.width, self.header.height
        return (width, height) if self.width is None else thumbnail_size(width, height, self.width)

    @property
    def scale(self) -> tuple[float, float] | None:
        """(vertical, horizontal) scale of a thumbnail to the image; None for the full size."""
        if self.width is None:
            return None
        width, height = self.size
        return height / self.header.height, width / self.header.width


class JobQueue:
    """A bounded queue of decode jobs: visitors' jobs fairly between clients, ahead of
    background jobs, which go first in first out."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._levels: dict[Priority, deque[DecodeJob]] = {p: deque() for p in Priority}
        self._ready = threading.Condition()
        self._closed = False
        self._served_tag = 0
        self._last_tag: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels.values())

    def put(self, job: DecodeJob) -> None:
        """Queue a job, or raise `QueueFullError` (`ModelUnavailableError` once closed)."""
        with self._ready:
            if self._closed:
                raise ModelUnavailableError("the render service is shutting down")
            if len(self) >= self.maxsize:
                raise QueueFullError("too many images are being rendered; try again shortly")
            if job.priority is Priority.INTERACTIVE:
                self._tag(job)
            self._levels[job.priority].append(job)
            self._ready.notify()

    def promote(self, job: DecodeJob, deadline: float, client: str) -> None:
        """Make a job interactive for `client` (into that level's fair order if still
        queued), with a deadline no earlier than `deadline` (a job also wanted in the
        background keeps none)."""
        with self._ready:
            if job.deadline is not None:
                job.deadline = max(job.deadline, deadline)
            if job.priority is not Priority.INTERACTIVE:
                job.client = client
                level = self._levels[job.priority]
                if job in level:
                    level.remove(job)
                    self._tag(job)
                    self._levels[Priority.INTERACTIVE].append(job)
                job.priority = Priority.INTERACTIVE

    def take(self, most: int, window: float) -> list[DecodeJob] | None:
        """The next batch: the first interactive job and up to `most` in all that are queued
        within `window` seconds, or else one background job; None once closed."""
        with self._ready:
            while not self._closed and not len(self):
                self._ready.wait()
            if self._closed:
                return None
            batch = [self._pop(Priority.BACKGROUND)]
            if batch[0].priority is Priority.BACKGROUND:
                return batch
            end = time.monotonic() + window
            while len(batch) < most and not self._closed:
                job = self._pop(Priority.INTERACTIVE)
                if job is not None:
                    batch.append(job)
                    continue
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            return batch

    def close(self) -> list[DecodeJob]:
        """Refuse new jobs, wake `take`; the jobs that were queued."""
        with self._ready:
            self._closed = True
            jobs = [job for level in self._levels.values() for job in level]
            for level in self._levels.values():
                level.clear()
            self._ready.notify_all()
            return jobs

    def _tag(self, job: DecodeJob) -> None:
        """Give a visitor's job its fair tag: one past its client's last, or past the tag last
        served if that is later (a client idle for a while starts level with the others)."""
        job.tag = max(self._served_tag, self._last_tag.get(job.client, 0)) + 1
        self._last_tag[job.client] = job.tag

    def _pop(self, lowest: Priority) -> DecodeJob | None:
        """The lowest-tagged visitor's job (the earliest of equal tags), else the oldest
        background job if `lowest` allows it."""
        visitors = self._levels[Priority.INTERACTIVE]
        if visitors:
            job = min(visitors, key=lambda queued: queued.tag)  # min keeps the first of ties
            visitors.remove(job)
            self._served_tag = max(self._served_tag, job.tag)
            self._last_tag = {c: t for c, t in self._last_tag.items() if t > self._served_tag}
            return job
        background = self._levels[Priority.BACKGROUND]
        if lowest is Priority.BACKGROUND and background:
            return background.popleft()
        return None


class DecodeBatcher:
    """The decode thread and its queue; `codec()` gives the loaded codec."""

    def __init__(
        self,
        codec: Callable[[], Codec],
        metrics: Metrics,
        *,
        queue_size: int = 64,
        batch: int | None = None,
    ) -> None:
        self.metrics = metrics
        self.batch = batch
        self._most = batch or 1
        """Jobs one `take` gathers at most: `batch`, or (`auto`) by the decoder's device once
        a pass has seen it."""
        self.decoding = 0
        """Jobs in the forward pass now."""
        self._codec = codec
        self._queue = JobQueue(queue_size)
        self._thread = threading.Thread(target=self._run, name="render-decode", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Decode jobs waiting for the model."""
        return len(self._queue)

    def submit(
        self,
        header: LatentFile,
        latent: np.ndarray,
        priority: Priority,
        deadline: float | None,
        *,
        width: int | None = None,
        client: str = "",
    ) -> DecodeJob:
        """Queue a latent for decoding, with `width` straight to that thumbnail width on the
        thumbnail decoder, for `client` (`QueueFullError` if the queue is full)."""
        job = DecodeJob(header, latent, priority, deadline, width, client)
        self._queue.put(job)
        return job

    def promote(self, job: DecodeJob, deadline: float, client: str) -> None:
        """`client` waits for this job: decode it ahead of background work, in fair order."""
        self._queue.promote(job, deadline, client)

    def close(self, timeout: float) -> None:
        """Fail the queued jobs, let the pass in flight finish (up to `timeout` seconds), stop."""
        for job in self._queue.close():
            job.future.set_exception(ModelUnavailableError("the render service is shutting down"))
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while (batch := self._queue.take(self._most, BATCH_WINDOW_S)) is not None:
            self._decode(batch)

    def _decode(self, batch: list[DecodeJob]) -> None:
        now = time.monotonic()
        groups: dict[tuple[tuple[int, ...], tuple[float, float] | None], list[DecodeJob]] = {}
        for job in batch:
            if job.deadline is not None and job.deadline < now:
                job.future.set_exception(
                    DeadlineError("the render waited in the queue past its deadline")
                )
            else:
                groups.setdefault((job.latent.shape, job.scale), []).append(job)
        if not groups:
            return
        codec = self._codec()
        self._most = self.batch or auto_batch(codec.decoder.device)
        for (shape, scale), jobs in groups.items():
            size = _batch_for(codec, shape, scale is not None)
            for i in range(0, len(jobs), size):
                self._forward(codec, jobs[i : i + size])

    def _forward(self, codec: Codec, jobs: list[DecodeJob]) -> None:
        """One decoder pass over same-shape, same-scale latents; each job gets its crop or the
        error."""
        start = time.perf_counter()
        self.decoding = len(jobs)
        for job in jobs:
            job.future.set_running_or_notify_cancel()
        scale = jobs[0].scale
        try:
            latents = torch.from_numpy(np.stack([job.latent for job in jobs]))
            pixels = codec.decode_latents(latents, scale)
        except Exception as exc:
            log.exception("decoding %d latents failed", len(jobs))
            for job in jobs:
                job.future.set_exception(exc)
            return
        finally:
            self.decoding = 0
        self.metrics.decode_seconds.observe(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(jobs))
        self.metrics.decodes.inc(len(jobs))
        if scale is not None:
            self.metrics.thumbnail_decodes.inc(len(jobs))
        for row, job in enumerate(jobs):
            width, height = job.size
            job.future.set_result(pixels[row, :, :height, :width])


def _batch_for(codec: Codec, shape: tuple[int, ...], thumbnail: bool = False) -> int:
    """Latents of `shape` decoded in one forward pass: at most `BATCH_PIXELS` pixels of them
    (of one tile each, for latents larger than the decoder's tile; a quarter as many for a
    thumbnail, whose features are at 1/4 scale and images at most 1/2)."""
    scale = codec.decoder.space.downscale
    tile = codec.settings.tile
    pixels = min(shape[-2] * scale, tile) * min(shape[-1] * scale, tile)
    return max(1, BATCH_PIXELS // (pixels // 4 if thumbnail else pixels))
