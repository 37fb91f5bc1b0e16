"""Uploads -> latent files: the bytes decide the type (allowlist, pixel limit), only the latent
is kept. The upload is read from memory (see `InMemoryRequest`) and never written to disk."""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO

from flask import Request, current_app
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, ServiceUnavailable

from codec import Codec, ImageInputError

from .errors import InsufficientStorage
from .render import get_renderer
from .storage import ImageRecord, StorageFullError, get_store
from .unavailable import RETRY_AFTER_S

log = logging.getLogger(__name__)

_encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
"""The one thread that decodes uploads and runs the encoder, as the render service's decode
thread runs the decoder. Each encode holds its pixels and the encoder's activations (about
400 MB more for a 768x512 photo with TAESD on a CPU) and already uses every core, so running
them on the request threads only multiplied the memory (8 at once peaked 1.2 GB above the idle
worker) and gave every request thread its own pool of torch threads. An upload that waits
longer than `DECODE_TIMEOUT` is a 503."""


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
    job = _encoder.submit(_open_and_encode, codec, data)
    try:
        image, latent = job.result(timeout=current_app.config["DECODE_TIMEOUT"])
    except FutureTimeout:
        job.cancel()
        raise ServiceUnavailable(
            "Too many uploads are being encoded; retry shortly.", retry_after=RETRY_AFTER_S
        ) from None
    except ImageInputError as exc:
        raise BadRequest(f"Not an acceptable image: {exc}") from None
    try:
        record, key = get_store().add(
            latent,
            width=image.width,
            height=image.height,
            uploaded_bytes=len(data),
            method=codec.settings.method,
        )
    except StorageFullError as exc:
        log.error("disk full, %s not stored: %s", upload.filename, exc)
        raise InsufficientStorage() from None
    current_app.extensions["latent_gallery.metrics"].uploads.inc()
    renderer.warm(record.id, record.width)
    return record, key


def _open_and_encode(codec: Codec, data: bytes) -> tuple[Image.Image, bytes]:
    image = codec.open(data)
    return image, codec.encode(image)
