"""Previews (`/i/<id>.preview.png`): the latent mapped to RGB, one pixel a latent position.

A large image's preview comes from its display latent (1/8 of the display size: 128×72 px and
about a quarter of the bytes for a 2048×1152 photo), small enough for a card's placeholder.

Made from the stored latent file alone by `codec.preview` (dequantize, a 3×4 matrix and a bias):
no model, so a page's placeholders appear at once, also while the decoder is busy or not
loaded. The PNG is kept in the render cache (under `(id, "preview")`, dropped with the image's
renders on delete). A latent in a space with no shipped map gets 404 rather than wrong colours.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request

from codec.preview import preview_of_file

from .media import immutable
from .png import encode_png
from .storage import ImageRecord, get_record_or_404, get_store

bp = Blueprint("previews", __name__)


@bp.get("/i/<image_id>.preview.png", endpoint="preview")
def preview(image_id: str) -> Response:
    """The image's preview PNG (1/8 of its display size), cached for good; 304 on
    `If-None-Match`."""
    record = get_record_or_404(image_id)
    etag = f"{record.id}-preview"
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = Response(preview_png(record), mimetype="image/png")
    response.set_etag(etag)
    return immutable(response)


def preview_png(record: ImageRecord) -> bytes:
    """The preview PNG of a stored image, from the render cache or made and cached (404 if the
    latent file is gone or no map serves its space)."""
    cache, key = current_app.extensions["latent_gallery.cache"], (record.id, "preview")
    png = cache.get(key)
    if png is None:
        try:
            display = record.display_bytes is not None
            image = preview_of_file(get_store().read_latent(record.id, display))
        except FileNotFoundError:
            abort(404, "This image was just deleted.")
        if image is None:
            abort(404, "No preview map is shipped for this image's latent space.")
        png = encode_png(image)
        cache.put(key, png)
    return png
