"""The encode queue: accepted upload jobs, one encode thread, the jobs kept for their results.

One thread decodes uploads and runs the encoder, as the render side's decode thread runs the
decoder: each encode holds its pixels and the encoder's activations (about 400 MB more for a
768x512 photo with TAESD on a CPU) and already uses every core, so encoding on the request
threads only multiplied the memory (8 at once peaked 1.2 GB above the idle worker). The queue
is bounded (`ENCODE_QUEUE` files waiting or encoding): `upload_flow.accept` reserves places
before it admits files.

A job's id is a secret only its uploader knows; the image it stores gets the id `image_id_of`
the job id (a hash), so after the job has left this process's memory (expiry, restart) its
status can still be told from the database: stored, or never stored. Finished jobs are kept
`KEEP_S` seconds (at most `MAX_KEPT`), for their result and the delete key, shown once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from .metrics import Metrics
from .storage import ImageRecord

log = logging.getLogger(__name__)

KEEP_S = 600.0
MAX_KEPT = 1000
RETRY_AFTER_S = 5


def image_id_of(job_id: str) -> str:
    """The id of the image a job stores: a hash of the job id (the job id is not derivable)."""
    digest = hashlib.sha256(b"latent-gallery upload " + job_id.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(eq=False)
class UploadJob:
    """One accepted file: pending until `done` is set, then `record` or `error`."""

    id: str
    filename: str | None
    data: bytes | None = field(default=None, repr=False)
    done: threading.Event = field(default_factory=threading.Event)
    record: ImageRecord | None = None
    delete_key: str | None = field(default=None, repr=False)
    error: HTTPException | None = None
    finished_at: float = 0.0
    accepted: bool = False
    """Whether it was admitted to the encode queue (else it finished with its refusal)."""

    @property
    def pending(self) -> bool:
        """Whether it is still waiting or encoding."""
        return not self.done.is_set()

    def finish(
        self,
        record: ImageRecord | None = None,
        delete_key: str | None = None,
        error: HTTPException | None = None,
    ) -> None:
        """Mark it finished (stored as `record`, or failed with `error`); drop its pixels."""
        self.record, self.delete_key, self.error = record, delete_key, error
        self.data, self.finished_at = None, time.monotonic()
        self.done.set()

    @property
    def image_id(self) -> str:
        """The id its image has (or will have) once stored."""
        return image_id_of(self.id)


class UploadQueue:
    """The encode queue of one app in one process: places, the encode thread, the jobs.

    `store(data, filename, image_id)` encodes and stores one file (`ingest.encode_and_store`)
    and returns its record and delete key, or raises an `HTTPException` saying why not."""

    def __init__(
        self,
        store: Callable[[bytes, str | None, str], tuple[ImageRecord, str]],
        bound: int,
        metrics: Metrics,
    ) -> None:
        self.bound = bound
        self.metrics = metrics
        self._store = store
        self._queue: queue.Queue[UploadJob | None] = queue.Queue()
        self._jobs: OrderedDict[str, UploadJob] = OrderedDict()
        self._unfinished = 0
        self._lock = threading.Lock()
        metrics.encode_queue_depth.set_function(lambda: self.depth)
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Accepted files not yet stored or failed (waiting or encoding)."""
        return self._unfinished

    def reserve(self, count: int) -> int:
        """Take up to `count` places in the queue; how many were free (give back the unused
        ones with `enqueue`)."""
        with self._lock:
            places = max(0, min(count, self.bound - self._unfinished))
            self._unfinished += places
            return places

    def enqueue(self, jobs: list[UploadJob], reserved: int) -> None:
        """Queue `jobs` in `reserved` places taken by `reserve` (the rest are given back)."""
        with self._lock:
            self._unfinished -= reserved - len(jobs)
            self._prune(time.monotonic())
            for job in jobs:
                job.accepted = True
                self._jobs[job.id] = job
        for job in jobs:
            self._queue.put(job)

    def full(self) -> ServiceUnavailable:
        """The refusal of a file that found no place in the queue."""
        self.metrics.rejected.labels("encode_queue_full").inc()
        return ServiceUnavailable(
            f"The server is already encoding {self.bound} uploads, its limit; this file was "
            f"not stored. Send it again in {RETRY_AFTER_S} s.",
            retry_after=RETRY_AFTER_S,
        )

    def get(self, job_id: str) -> UploadJob | None:
        """The job of an id while this process keeps it, else None."""
        with self._lock:
            self._prune(time.monotonic())
            return self._jobs.get(job_id)

    def close(self, timeout: float) -> None:
        """Finish the accepted jobs (up to `timeout` seconds), then stop the encode thread."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    def _prune(self, now: float) -> None:
        """Forget finished jobs older than `KEEP_S`, and the oldest past `MAX_KEPT`."""
        finished = [job for job in self._jobs.values() if job.done.is_set()]
        excess = len(finished) - MAX_KEPT
        for index, job in enumerate(finished):
            if index < excess or now - job.finished_at > KEEP_S:
                del self._jobs[job.id]

    def _run(self) -> None:
        """The encode thread: each job to its end, in order."""
        while (job := self._queue.get()) is not None:
            record = key = error = None
            try:
                record, key = self._store(job.data, job.filename, job.image_id)
            except HTTPException as exc:
                error = exc
            except Exception:
                log.exception("upload %s (%s) failed", job.image_id, job.filename)
                error = InternalServerError("The image could not be encoded; nothing was stored.")
            with self._lock:
                self._unfinished -= 1
            job.finish(record, key, error)
