"""Uploads -> latent files: the bytes decide the type (allowlist, pixel limit), only the latent
is kept. The upload is read from memory (see `InMemoryRequest`) and never written to disk."""

from __future__ import annotations

import io
import logging
import threading
from typing import IO

from flask import Request, current_app
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, ServiceUnavailable

from codec import ImageInputError, LatentFile
from codec.methods import method_by_id

from .errors import InsufficientStorage
from .render import RETRY_AFTER_S, get_renderer
from .storage import ImageRecord, StorageFullError, get_store

log = logging.getLogger(__name__)

ENCODE_SLOTS = 1
"""Uploads decoded and encoded at once. Each holds its pixels and the encoder's activations
(about 400 MB more for a 768x512 photo with TAESD on a CPU), and one encode already uses every
core, so more at once only multiply the memory: 8 request threads peaked 1.2 GB above the idle
worker before this bound. Waiting longer than `DECODE_TIMEOUT` is a 503."""
_encode_slots = threading.BoundedSemaphore(ENCODE_SLOTS)


class InMemoryRequest(Request):
    """Keeps multipart file parts in memory (werkzeug spools parts over 500 KB to temp files);
    `MAX_CONTENT_LENGTH` bounds the memory a request can take."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def ingest(upload: FileStorage) -> tuple[ImageRecord, str]:
    """Decode, encode and store one uploaded file; warm its renders in the background.

    Returns the record and its delete key; raises `BadRequest` for a file that is not an
    acceptable image (its description says why) and `InsufficientStorage` (507) when the disk
    is full, so that a request's other files keep their own outcome.
    """
    data = upload.read()
    if not data:
        raise BadRequest("The file is empty.")
    renderer = get_renderer()
    codec = renderer.require_codec()
    if not _encode_slots.acquire(timeout=current_app.config["DECODE_TIMEOUT"]):
        raise ServiceUnavailable(
            "Too many uploads are being encoded; retry shortly.", retry_after=RETRY_AFTER_S
        )
    try:
        image = codec.open(data)
        latent = codec.encode(image)
    except ImageInputError as exc:
        raise BadRequest(f"Not an acceptable image: {exc}") from None
    finally:
        _encode_slots.release()
    method = method_by_id(LatentFile.from_bytes(latent).method_id).name
    try:
        record, key = get_store().add(
            latent, width=image.width, height=image.height, uploaded_bytes=len(data), method=method
        )
    except StorageFullError as exc:
        log.error("disk full, %s not stored: %s", upload.filename, exc)
        raise InsufficientStorage() from None
    current_app.extensions["latent_gallery.metrics"].uploads.inc()
    renderer.warm(record.id, record.width)
    return record, key
