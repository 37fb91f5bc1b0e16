"""Renders (`/i/<id>.png?v=&w=`, `.avif`) and latent files (`/i/<id>.sdz`): immutable, cacheable.

A render's URL names the decoder version that renders it (`v`, `render_url`), so a year of
`immutable` caching stays true when the decoder changes: a URL with another version answers
302 to the current one, and one without `v` (links made before versions) is served for
revalidation (`no-cache`, ETag) rather than cached forever. Shared caches (a CDN, nginx) keep
them `SHARED_MAX_AGE` seconds only, then revalidate: a deleted image leaves them within
minutes, with no purge hook to configure.
"""

from __future__ import annotations

import io

from flask import Blueprint, Response, abort, redirect, request, send_file, url_for
from werkzeug.exceptions import BadRequest

from .admission import client_address
from .gallery import get_gallery, record_or_404
from .render.formats import MEDIA_TYPES
from .render.sizes import effective_width, render_widths
from .urls import absolute_url

bp = Blueprint("media", __name__)

ONE_YEAR = 31536000
SHARED_MAX_AGE = 300


@bp.get("/i/<image_id>.png", endpoint="png", defaults={"fmt": "png"})
@bp.get("/i/<image_id>.avif", endpoint="avif", defaults={"fmt": "avif"})
def render(image_id: str, fmt: str) -> Response:
    """The image decoded, full size or `?w=` one of its `render_widths`, as PNG or AVIF; 304 on
    a matching `If-None-Match` without decoding (the ETag names the id, width, format and
    decoder weights)."""
    record = record_or_404(image_id)
    asked_width = request.args.get("w", type=int)
    widths = render_widths(record.width, record.height)
    if "w" in request.args and asked_width not in widths:
        raise BadRequest(f"w must be one of {', '.join(map(str, widths))}.")
    gallery = get_gallery()
    current = gallery.codec_host.codec.version
    version = request.args.get("v")
    if version is not None and version != current:
        moved = redirect(render_url(image_id, asked_width, fmt))
        moved.cache_control.no_cache = True
        return moved
    width = effective_width(record.width, asked_width)
    etag = f"{image_id}-{width or 'full'}-{fmt}-{current}"
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        try:
            data = gallery.renderer.render(record, width, fmt, client_address())
            response = Response(data, mimetype=MEDIA_TYPES[fmt])
        except FileNotFoundError:
            abort(404, "This image was just deleted.")
    response.set_etag(etag)
    if version is None:
        response.cache_control.public = True
        response.cache_control.no_cache = True
        return response
    return immutable(response)


def render_url(
    image_id: str, width: int | None = None, fmt: str = "png", *, external: bool = False
) -> str:
    """The URL of an image's render (`width`: one of its `render_widths`; `fmt`: one of
    `MEDIA_TYPES`) under the decoder's version (known without loading the models)."""
    url = absolute_url if external else url_for
    version = get_gallery().codec_host.codec.version
    return url(f"media.{fmt}", image_id=image_id, w=width, v=version)


@bp.get("/i/<image_id>.sdz", endpoint="latent")
def latent(image_id: str) -> Response:
    """The stored latent file, as a download."""
    record = record_or_404(image_id)
    try:
        data = get_gallery().store.read_latent(record.id)
    except FileNotFoundError:
        abort(404, "This image was just deleted.")
    response = send_file(
        io.BytesIO(data),
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"{record.id}.sdz",
        etag=f"{record.id}-sdz",
        max_age=ONE_YEAR,
    )
    return immutable(response)


def immutable(response: Response) -> Response:
    """`response` marked cacheable for a year, never revalidated, by browsers; by shared
    caches for `SHARED_MAX_AGE` seconds (then revalidated, so a delete reaches them)."""
    response.cache_control.public = True
    response.cache_control.max_age = ONE_YEAR
    response.cache_control.s_maxage = SHARED_MAX_AGE
    response.cache_control.immutable = True
    return response
