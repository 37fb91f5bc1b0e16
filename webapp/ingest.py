"""Uploads -> latent files: the bytes decide the type (allowlist, pixel limit), only the latent
is kept. The upload is read from memory (see `InMemoryRequest`) and never written to disk."""

from __future__ import annotations

import io
import logging
from typing import IO, TYPE_CHECKING

from flask import Request
from PIL import Image
from werkzeug.exceptions import BadRequest

from codec import Codec, Encoded, ImageInputError
from codec.images import SOURCE_SIZE, open_image
from codec.methods import get_method

from .errors import InsufficientStorage
from .render.formats import thumbnail
from .render.sizes import display_size
from .storage import ImageRecord, StorageFullError

if TYPE_CHECKING:
    from .gallery import Gallery

log = logging.getLogger(__name__)


DISPLAY_QUALITY_STEP = 10
"""How much higher than its method's default quality a display latent is coded. Measured on 6
camera photos (`../shared/images/photos`, stored at 2048 px; ec, 2-core AMD EPYC): at 1024 px
their display latents decode 1.6 dB below the full decode resized at the default q75 (9 KB),
0.65 dB below at q85 (17 KB), 0.6 dB at q90 (22 KB); unquantized, 0.5 dB (TAESD's own limit
at that size)."""


def compress_display(codec: Codec, image: Image.Image) -> Encoded | None:
    """The display latent of an image larger than its display render (`render.sizes.display_size`),
    coded `DISPLAY_QUALITY_STEP` above the default quality; None for an image that fits."""
    size = display_size(image.width, image.height)
    if size is None:
        return None
    quality = min(100, get_method(codec.settings.method).default_quality + DISPLAY_QUALITY_STEP)
    return codec.compress(thumbnail(image, size[0]), quality=quality)


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


def encode_and_store(
    gallery: Gallery, data: bytes, filename: str | None, image_id: str
) -> tuple[ImageRecord, str]:
    """Decode, encode and store one uploaded file as `image_id`: its latent and, when it is
    larger than its display render (`render.sizes.display_size`), a display latent of that size. Its
    renders come from the encodes' own reconstructions when they made them (no decode), else
    are warmed in the background.

    Runs on the encode thread (`webapp.uploads`). Returns the record and its delete key; raises
    `BadRequest` for a file that is not an acceptable image (its description says why),
    `InsufficientStorage` (507) when the disk is full and `ModelUnavailableError` (503) when the
    models cannot be loaded.
    """
    codec = gallery.codec_host.require()
    try:
        image = open_image(data, codec.settings.max_pixels, gallery.settings.max_side)
        encoded = codec.compress(image)
        display = compress_display(codec, image)
    except ImageInputError as exc:
        raise BadRequest(f"Not an acceptable image: {exc}") from None
    try:
        record, key = gallery.store.add(
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
    gallery.metrics.uploads.inc()
    if encoded.image is not None and (display is None or display.image is not None):
        gallery.renderer.put_decoded(record, encoded.image, display.image if display else None)
    else:
        gallery.renderer.warm(record)
    return record, key
