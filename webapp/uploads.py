"""Upload jobs: admission to a bounded encode queue, one encode thread, and the table of jobs.

Admission is the only place that says "retry": a request is refused (503 + `Retry-After`)
before any work starts when `ENCODE_QUEUE` files are already waiting or encoding; otherwise
all its files are accepted, and each accepted file is encoded and stored whatever that takes.
Requests wait for their jobs up to `UPLOAD_WAIT` seconds; a job still running then is
answered by its status URL later.

One thread decodes uploads and runs the encoder, as the render side's decode thread runs the
decoder: each encode holds its pixels and the encoder's activations (about 400 MB more for a
768x512 photo with TAESD on a CPU) and already uses every core, so encoding on the request
threads only multiplied the memory (8 at once peaked 1.2 GB above the idle worker).

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
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from flask import Flask, current_app
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    ServiceUnavailable,
)

from .ingest import encode_and_store
from .per_process import per_process, pop_own
from .render import get_renderer
from .storage import ImageRecord, get_store, is_valid_id

log = logging.getLogger(__name__)

KEEP_S = 600.0
MAX_KEPT = 1000
RETRY_AFTER_S = 5
_EXTENSION = "latent_gallery.uploads"
NOT_STORED = (
    "This upload was not stored: no upload with this id is encoding in this server and no image "
    "was stored from it (the server may have restarted while it was encoding, or the image was "
    "deleted since). Send the file again."
)
_key_lock = threading.Lock()


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
    """The encode queue of one app in one process: admission, the encode thread, the jobs."""

    def __init__(self, app: Flask, bound: int) -> None:
        self.app = app
        self.bound = bound
        self._queue: queue.Queue[UploadJob | None] = queue.Queue()
        self._jobs: OrderedDict[str, UploadJob] = OrderedDict()
        self._unfinished = 0
        self._lock = threading.Lock()
        app.extensions["latent_gallery.metrics"].encode_queue_depth.set_function(lambda: self.depth)
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Accepted files not yet stored or failed (waiting or encoding)."""
        return self._unfinished

    def submit(self, files: list[tuple[bytes, str | None]]) -> list[UploadJob]:
        """A job for each (content, filename): empty files fail at once, the others are all
        accepted, or none is and this raises 503 (`Retry-After`) if the queue is full."""
        jobs = [UploadJob(secrets.token_urlsafe(16), name, data) for data, name in files]
        accepted = [job for job in jobs if job.data]
        for job in jobs:
            if not job.data:
                job.finish(error=BadRequest("The file is empty."))
        if not accepted:
            return jobs
        with self._lock:
            if self._unfinished >= self.bound:
                self.app.extensions["latent_gallery.metrics"].rejected.labels(
                    "encode_queue_full"
                ).inc()
                raise ServiceUnavailable(
                    f"The server is already encoding {self._unfinished} uploads, its limit; "
                    f"nothing was stored. Send the files again in {RETRY_AFTER_S} s.",
                    retry_after=RETRY_AFTER_S,
                )
            self._prune(time.monotonic())
            for job in accepted:
                self._jobs[job.id] = job
            self._unfinished += len(accepted)
        for job in accepted:
            self._queue.put(job)
        return jobs

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
                with self.app.app_context():
                    record, key = encode_and_store(job.data, job.filename, job.image_id)
            except HTTPException as exc:
                error = exc
            except Exception:
                log.exception("upload %s (%s) failed", job.image_id, job.filename)
                error = InternalServerError("The image could not be encoded; nothing was stored.")
            with self._lock:
                self._unfinished -= 1
            job.finish(record, key, error)


def wait_for(jobs: list[UploadJob], timeout: float) -> None:
    """Wait until every job has finished or `timeout` seconds have passed."""
    end = time.monotonic() + timeout
    for job in jobs:
        job.done.wait(max(0.0, end - time.monotonic()))


def accept(files: list[FileStorage]) -> list[UploadJob]:
    """Admit a request's files (see `UploadQueue.submit`); 503 if the models are not loaded."""
    contents = [(file.read(), file.filename) for file in files]
    if any(data for data, _ in contents):
        get_renderer().require_codec()
    return get_uploads().submit(contents)


def lookup(job_id: str) -> tuple[UploadJob | None, ImageRecord | None]:
    """The job of an id while this process keeps it, and the image it stored as the database
    has it now (None while it is encoding, if it failed, or if no image of it is stored)."""
    if not is_valid_id(job_id):
        return None, None
    job = get_uploads().get(job_id)
    if job is not None and (job.pending or job.error is not None):
        return job, None
    return job, get_store().get(image_id_of(job_id))


def take_delete_key(job: UploadJob) -> str | None:
    """The stored image's delete key the first time it is asked for, then None."""
    with _key_lock:
        key, job.delete_key = job.delete_key, None
        return key


def get_uploads(app: Flask | None = None) -> UploadQueue:
    """This process's upload queue for the app, created on first use (a forked child makes
    its own)."""
    app = app or current_app._get_current_object()
    return per_process(app, _EXTENSION, lambda: UploadQueue(app, app.config["ENCODE_QUEUE"]))


def close_uploads(app: Flask) -> None:
    """Finish the app's accepted uploads (up to `DECODE_TIMEOUT`) if this process has any."""
    uploads = pop_own(app, _EXTENSION)
    if uploads is not None:
        uploads.close(app.config["DECODE_TIMEOUT"])
