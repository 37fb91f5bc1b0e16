"""Upload jobs: admission file by file, a bounded encode queue, one encode thread, the jobs.

Admission (`accept`) is the only place that says "retry", and it decides for each file of a
request on its own, before any work starts: past `MAX_FILES` in one request, empty, not an
acceptable image by its header (format, pixel limit), past the client's upload budget (files,
unacceptable ones too, and megapixels: `security.charge_upload`) or past the free places of
the encode queue (`ENCODE_QUEUE` files waiting or encoding), a file gets its own error; the
others are accepted, and each accepted file is encoded and stored whatever that takes.
Requests wait for their jobs up to `UPLOAD_WAIT` seconds, holding one of the request threads'
wait slots (`admission.WaitSlots`; with none free they answer at once); a job still running
then is answered by its status URL later.

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
    RequestEntityTooLarge,
    ServiceUnavailable,
)

from codec import ImageInputError
from codec.images import fit_within, image_size

from .admission import client_address, get_wait_slots
from .ingest import encode_and_store
from .per_process import per_process, pop_own
from .render import get_renderer
from .security import charge_upload
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
        self.app.extensions["latent_gallery.metrics"].rejected.labels("encode_queue_full").inc()
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
    """Wait until every job has finished or `timeout` seconds have passed, holding a wait
    slot of the client's; with none free, return at once."""
    with get_wait_slots().slot(client_address()) as free:
        end = time.monotonic() + (timeout if free else 0.0)
        for job in jobs:
            job.done.wait(max(0.0, end - time.monotonic()))


def accept(files: list[FileStorage]) -> list[UploadJob]:
    """A job for each file of a request, admitted or refused on its own (see the module's
    docstring); 503 if the models are not loaded."""
    most = current_app.config["MAX_FILES"]
    jobs = [UploadJob(secrets.token_urlsafe(16), file.filename) for file in files]
    for job in jobs[most:]:
        job.finish(error=RequestEntityTooLarge(
            f"At most {most} files are taken in one request; send this one in another."
        ))  # fmt: skip
    contents = [(job, file.read()) for job, file in zip(jobs[:most], files[:most], strict=True)]
    limit = get_renderer().require_codec().settings.max_pixels if any(d for _, d in contents) else 0
    candidates = []
    for job, data in contents:
        pixels, error = _probe(data, limit)
        if error is None:
            job.data = data
            candidates.append((job, pixels))
        else:
            job.finish(error=charge_upload(0) or error)
    uploads = get_uploads()
    places = uploads.reserve(len(candidates))
    accepted = []
    try:
        for index, (job, pixels) in enumerate(candidates):
            refusal = uploads.full() if index >= places else charge_upload(pixels)
            if refusal is None:
                accepted.append(job)
            else:
                job.finish(error=refusal)
    except BaseException:
        uploads.enqueue([], places)  # the places back, nothing queued
        raise
    uploads.enqueue(accepted, places)
    return jobs


def _probe(data: bytes, max_pixels: int) -> tuple[int, BadRequest | None]:
    """The pixels a file's image is stored with (read from its header, up to `max_pixels`),
    or why it is not acceptable."""
    if not data:
        return 0, BadRequest("The file is empty.")
    try:
        width, height = image_size(data, max_pixels)
    except ImageInputError as exc:
        return 0, BadRequest(f"Not an acceptable image: {exc}")
    width, height = fit_within(width, height, current_app.config["MAX_SIDE"])
    return width * height, None


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
