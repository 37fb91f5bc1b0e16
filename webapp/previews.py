"""Previews (`/i/<id>.preview.webp`): the latent mapped to RGB, one pixel a latent position.

A large image's preview comes from its display latent (1/8 of the display size: 128×72 px and
a quarter of the pixels for a 2048×1152 photo). A placeholder is shown blurred and for a
moment, so it is lossy WebP (`QUALITY`): 1.5–3.3 KB against 14–23 KB as PNG (Kodak, and
camera photos' display latents).

Made from the stored latent file alone by `codec.preview` (dequantize, a 3×4 matrix and a bias):
no model, so a page's placeholders appear at once, also while the decoder is busy or not
loaded. The file is kept in the render cache (under `(id, "preview")`, dropped with the image's
renders on delete). A latent in a space with no shipped map gets 404 rather than wrong colours.
"""

from __future__ import annotations

import io

from flask import Blueprint, Response, abort, request

from codec.preview import preview_of_file

from .gallery import Gallery, get_gallery, record_or_404
from .media import immutable
from .storage import ImageRecord

bp = Blueprint("previews", __name__)

QUALITY = 70


@bp.get("/i/<image_id>.preview.webp", endpoint="preview")
def preview(image_id: str) -> Response:
    """The image's preview (1/8 of its display size), cached for good; 304 on
    `If-None-Match`."""
    record = record_or_404(image_id)
    etag = f"{record.id}-preview"
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = Response(preview_file(get_gallery(), record), mimetype="image/webp")
    response.set_etag(etag)
    return immutable(response)


def preview_file(gallery: Gallery, record: ImageRecord) -> bytes:
    """The preview WebP of a stored image, from the render cache or made and cached (404 if the
    latent file is gone or no map serves its space)."""
    key = (record.id, "preview")
    data = gallery.cache.get(key)
    if data is None:
        try:
            display = record.display_bytes is not None
            image = preview_of_file(gallery.store.read_latent(record.id, display))
        except FileNotFoundError:
            abort(404, "This image was just deleted.")
        if image is None:
            abort(404, "No preview map is shipped for this image's latent space.")
        buffer = io.BytesIO()
        image.save(buffer, "WEBP", quality=QUALITY)
        data = buffer.getvalue()
        gallery.cache.put(key, data)
    return data
