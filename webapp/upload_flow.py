"""One upload request, the same for the JSON API and the no-JS form: admit, wait, report.

`receive(files, wait)` admits each file on its own (`accept`), before any work starts: past
`MAX_FILES` in one request, empty, not an acceptable image by its header (format, pixel limit),
past the client's upload budget (files, unacceptable ones too, and megapixels:
`security.UploadBudget`) or past the free places of the encode queue (`ENCODE_QUEUE` files
waiting or encoding), a file gets its own error; the others are queued, and each is encoded and
stored whatever that takes. Admission is the only place that says "retry". The request then
waits for its jobs up to `wait` seconds, holding one of the client's wait slots
(`admission.WaitSlots`; with none free it answers at once); a job still running then is
answered later at its status URL, whose `outcome` tells what became of it.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from codec import ImageInputError
from codec.images import fit_within, image_size

from .admission import client_address
from .gallery import get_gallery
from .storage import ImageRecord, is_valid_id
from .uploads import UploadJob, image_id_of

NOT_STORED = (
    "This upload was not stored: no upload with this id is encoding in this server and no image "
    "was stored from it (the server may have restarted while it was encoding, or the image was "
    "deleted since). Send the file again."
)
_key_lock = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    """What became of one upload job, as a response tells it."""

    job_id: str
    filename: str | None
    record: ImageRecord | None
    """The stored image (None while encoding, after a failure, or when nothing was stored)."""
    delete_key: str | None
    """The image's delete key, given once: to the first outcome after it was stored."""
    pending: bool
    error: HTTPException | None


def receive(files: list[FileStorage], wait: float) -> list[UploadJob]:
    """Admit each file (`accept`), then wait up to `wait` seconds for the accepted ones; the
    job of each file, in order (`outcome_of` tells what became of it)."""
    jobs = accept(files)
    wait_for([job for job in jobs if job.accepted], wait)
    return jobs


def accept(files: list[FileStorage]) -> list[UploadJob]:
    """A job for each file of a request, admitted or refused on its own (see the module's
    docstring); `ModelUnavailableError` (503) while the models cannot be loaded."""
    gallery = get_gallery()
    most = gallery.settings.max_files
    jobs = [UploadJob(secrets.token_urlsafe(16), file.filename) for file in files]
    for job in jobs[most:]:
        job.finish(error=RequestEntityTooLarge(
            f"At most {most} files are taken in one request; send this one in another."
        ))  # fmt: skip
    client = client_address()
    contents = [(job, file.read()) for job, file in zip(jobs[:most], files[:most], strict=True)]
    if any(data for _, data in contents):
        gallery.codec_host.require()  # 503 while the models cannot be loaded
    candidates = []
    for job, data in contents:
        pixels, error = _probe(data)
        if error is None:
            job.data = data
            candidates.append((job, pixels))
        else:
            job.finish(error=gallery.budget.charge(0, client) or error)
    uploads = gallery.uploads
    places = uploads.reserve(len(candidates))
    accepted = []
    try:
        for index, (job, pixels) in enumerate(candidates):
            refusal = uploads.full() if index >= places else gallery.budget.charge(pixels, client)
            if refusal is None:
                accepted.append(job)
            else:
                job.finish(error=refusal)
    except BaseException:
        uploads.enqueue([], places)  # the places back, nothing queued
        raise
    uploads.enqueue(accepted, places)
    return jobs


def wait_for(jobs: list[UploadJob], timeout: float) -> None:
    """Wait until every job has finished or `timeout` seconds have passed, holding a wait
    slot of the client's; with none free, return at once."""
    with get_gallery().waits.slot(client_address()) as free:
        end = time.monotonic() + (timeout if free else 0.0)
        for job in jobs:
            job.done.wait(max(0.0, end - time.monotonic()))


def outcome_of(job: UploadJob) -> Outcome:
    """The outcome of a job this request holds (its delete key taken, if it has one)."""
    record = job.record if not job.pending and job.error is None else None
    return _outcome(job.id, job, record)


def outcome(job_id: str) -> Outcome:
    """The outcome of a job by its id: from this process's job while it keeps it, the stored
    image as the database has it now (it may have been deleted since), else not stored."""
    if not is_valid_id(job_id):
        return _outcome(job_id, None, None)
    gallery = get_gallery()
    job = gallery.uploads.get(job_id)
    stored = job is None or (not job.pending and job.error is None)
    return _outcome(job_id, job, gallery.store.get(image_id_of(job_id)) if stored else None)


def _outcome(job_id: str, job: UploadJob | None, record: ImageRecord | None) -> Outcome:
    key = None
    if job is not None and record is not None:
        with _key_lock:
            key, job.delete_key = job.delete_key, None
    return Outcome(
        job_id=job_id,
        filename=job.filename if job is not None else None,
        record=record,
        delete_key=key,
        pending=job is not None and job.pending,
        error=job.error if job is not None else None,
    )


def _probe(data: bytes) -> tuple[int, BadRequest | None]:
    """The pixels a file's image is stored with (read from its header, up to the codec's pixel
    limit), or why it is not acceptable."""
    if not data:
        return 0, BadRequest("The file is empty.")
    gallery = get_gallery()
    try:
        width, height = image_size(data, gallery.codec_host.codec.settings.max_pixels)
    except ImageInputError as exc:
        return 0, BadRequest(f"Not an acceptable image: {exc}")
    width, height = fit_within(width, height, gallery.settings.max_side)
    return width * height, None
