"""Uploads -> latent files: the bytes decide the type (allowlist, pixel limit), only the latent
is kept. The upload is read from memory (see `InMemoryRequest`) and never written to disk."""

from __future__ import annotations

import io
import logging
from typing import IO

from flask import Request, current_app
from werkzeug.exceptions import BadRequest

from codec import ImageInputError
from codec.images import SOURCE_SIZE

from .errors import InsufficientStorage
from .png import display_size, thumbnail
from .render import get_renderer
from .storage import ImageRecord, StorageFullError, get_store

log = logging.getLogger(__name__)


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


def encode_and_store(data: bytes, filename: str | None, image_id: str) -> tuple[ImageRecord, str]:
    """Decode, encode and store one uploaded file as `image_id`: its latent and, when it is
    larger than its display render (`png.display_size`), a display latent of that size. Its
    renders come from the encodes' own reconstructions when they made them (no decode), else
    are warmed in the background.

    Runs on the encode thread (`webapp.uploads`), in an app context. Returns the record and its
    delete key; raises `BadRequest` for a file that is not an acceptable image (its description
    says why) and `InsufficientStorage` (507) when the disk is full.
    """
    renderer = get_renderer()
    codec = renderer.require_codec()
    try:
        image = codec.open(data, current_app.config["MAX_SIDE"])
        encoded = codec.compress(image)
        size = display_size(image.width, image.height)
        display = codec.compress(thumbnail(image, size[0])) if size else None
    except ImageInputError as exc:
        raise BadRequest(f"Not an acceptable image: {exc}") from None
    try:
        record, key = get_store().add(
            encoded.data,
            image_id=image_id,
            width=image.width,
            height=image.height,
            uploaded_bytes=len(data),
            method=codec.settings.method,
            source_size=image.info[SOURCE_SIZE],
            display=display.data if display else None,
        )
    except StorageFullError as exc:
        log.error("disk full, %s not stored: %s", filename, exc)
        raise InsufficientStorage() from None
    current_app.extensions["latent_gallery.metrics"].uploads.inc()
    if encoded.image is not None and (display is None or display.image is not None):
        renderer.put_decoded(record, encoded.image, display.image if display else None)
    else:
        renderer.warm(record)
    return record, key
