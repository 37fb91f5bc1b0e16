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
from .png import effective_width, render_widths
from .render import get_renderer
from .storage import get_record_or_404, get_store
from .urls import absolute_url

bp = Blueprint("media", __name__)

ONE_YEAR = 31536000
SHARED_MAX_AGE = 300


FORMATS = {"png": "image/png", "avif": "image/avif"}
"""Render formats by extension: PNG (downloads, link previews), AVIF (what pages show)."""


@bp.get("/i/<image_id>.png", endpoint="png", defaults={"fmt": "png"})
@bp.get("/i/<image_id>.avif", endpoint="avif", defaults={"fmt": "avif"})
def render(image_id: str, fmt: str) -> Response:
    """The image decoded, full size or `?w=` one of its `render_widths`, as PNG or AVIF; 304 on
    a matching `If-None-Match` without decoding (the ETag names the id, width, format and
    decoder weights)."""
    record = get_record_or_404(image_id)
    asked_width = request.args.get("w", type=int)
    widths = render_widths(record.width, record.height)
    if "w" in request.args and asked_width not in widths:
        raise BadRequest(f"w must be one of {', '.join(map(str, widths))}.")
    renderer = get_renderer()
    version = request.args.get("v")
    if version is not None and version != renderer.version:
        moved = redirect(render_url(image_id, asked_width, fmt))
        moved.cache_control.no_cache = True
        return moved
    width = effective_width(record.width, asked_width)
    etag = f"{image_id}-{width or 'full'}-{fmt}-{renderer.version}"
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        try:
            data = renderer.render(record, width, fmt, client_address())
            response = Response(data, mimetype=FORMATS[fmt])
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
    `FORMATS`) under the current decoder's version; without a version while the decoder is not
    loaded."""
    renderer = get_renderer()
    version = renderer.version if renderer.codec is not None else None
    url = absolute_url if external else url_for
    return url(f"media.{fmt}", image_id=image_id, w=width, v=version)


@bp.get("/i/<image_id>.sdz", endpoint="latent")
def latent(image_id: str) -> Response:
    """The stored latent file, as a download."""
    record = get_record_or_404(image_id)
    try:
        data = get_store().read_latent(record.id)
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
