"""Rendered PNGs (`/i/<id>.png?w=`) and latent files (`/i/<id>.sdz`): immutable, cacheable."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request, send_file
from werkzeug.exceptions import BadRequest

from .render import THUMB_WIDTHS, effective_width, get_renderer
from .storage import get_record_or_404, get_store

bp = Blueprint("media", __name__)

ONE_YEAR = 31536000


@bp.get("/i/<image_id>.png", endpoint="png")
def png(image_id: str) -> Response:
    """The image decoded to PNG, full size or `?w=` one of `THUMB_WIDTHS`; 304 on a matching
    `If-None-Match` without decoding (the ETag names the id, width and decoder weights)."""
    record = get_record_or_404(image_id)
    width = request.args.get("w", type=int)
    if "w" in request.args and width not in THUMB_WIDTHS:
        raise BadRequest(f"w must be one of {', '.join(map(str, THUMB_WIDTHS))}.")
    width = effective_width(record.width, width)
    renderer = get_renderer()
    etag = f"{image_id}-{width or 'full'}-{renderer.version}"
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        try:
            response = Response(renderer.render(image_id, width), mimetype="image/png")
        except FileNotFoundError:
            abort(404, "This image was just deleted.")
    response.set_etag(etag)
    return _immutable(response)


@bp.get("/i/<image_id>.sdz", endpoint="latent")
def latent(image_id: str) -> Response:
    """The stored latent file, as a download."""
    record = get_record_or_404(image_id)
    response = send_file(
        get_store().path_of(record.id),
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"{record.id}.sdz",
        max_age=ONE_YEAR,
    )
    return _immutable(response)


def _immutable(response: Response) -> Response:
    response.cache_control.public = True
    response.cache_control.max_age = ONE_YEAR
    response.cache_control.immutable = True
    return response
