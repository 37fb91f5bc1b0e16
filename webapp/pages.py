"""Browser pages: gallery, image pages, htmx fragments, the no-JS upload form, htmx itself."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import js_lib_htmx
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from werkzeug.exceptions import BadRequest

from codec.images import thumbnail_size

from .gallery import PAGE_SIZE, get_gallery, record_or_404
from .media import ONE_YEAR, render_url
from .render.sizes import CARD_WIDTH, THUMB_WIDTHS, display_size, display_width
from .storage import ImageRecord
from .upload_flow import NOT_STORED, outcome, receive
from .urls import absolute_url, no_store

bp = Blueprint("pages", __name__)

PICTURE_SIZES = (
    "(max-width: 900px) min({width}px, calc(100vw - 3.5rem - 2px), {by_height}), "
    "min({width}px, calc(1200px - 25rem - 2px), calc(100vw - 27rem - 2px), {by_height})"
)
"""The width of the image page's picture as `static/app.css` lays it out (keep them in step):
the viewer's inside (the page less the details column above 900px, the viewer's padding and
border), or the picture's greatest height (`100vh - 10rem`) times its aspect ratio, or the
image's own width, whichever is least."""
HTMX_FILE = Path(js_lib_htmx.__file__).parent / "static" / "htmx" / "htmx.min.js"
HTMX_VERSION = re.search(rb'version:"([^"]+)"', HTMX_FILE.read_bytes()).group(1).decode()


@bp.get("/")
def gallery() -> str:
    """The gallery, newest first, starting at `?cursor=` (the no-JS "Load more")."""
    images, next_cursor = _gallery_page()
    return render_template("gallery.html", images=images, next_cursor=next_cursor)


@bp.get("/fragments/cards")
def cards() -> str:
    """The next page of cards and its own "Load more" button, for htmx."""
    images, next_cursor = _gallery_page()
    return render_template("_cards.html", images=images, next_cursor=next_cursor)


@bp.get("/fragments/card/<image_id>")
def card(image_id: str) -> str:
    """One card, inserted at the top of the grid after a JS upload."""
    return render_template("_card.html", image=record_or_404(image_id))


@bp.get("/i/<image_id>")
def image(image_id: str) -> str:
    """One image with its facts, share link, downloads and delete button."""
    record = record_or_404(image_id)
    newer, older = get_gallery().store.neighbours(record.id)
    return render_template(
        "image.html",
        image=record,
        page_url=absolute_url("pages.image", image_id=record.id),
        png_url=render_url(record.id, external=True),
        share_png=render_url(
            record.id, display_width(record.width, record.height), "png", external=True
        ),
        share_size=display_size(record.width, record.height) or record.size,
        newer=newer,
        older=older,
    )


@bp.get("/fragments/uploads/<job_id>")
def upload_card(job_id: str) -> str | Response:
    """An upload's card, for htmx: "encoding…" (polling itself) until the image is stored, then
    the image's card (with its delete key, once, `no-store`); a failed or lost upload says so.
    Always 200, which htmx swaps in."""
    result = outcome(job_id)
    if result.record is not None:
        return no_store(render_template(
            "_card.html", image=result.record, delete_key=result.delete_key, upload_job=job_id
        ))  # fmt: skip
    if result.pending:
        return render_template("_upload_card.html", job_id=job_id, filename=result.filename)
    message = result.error.description if result.error is not None else NOT_STORED
    return render_template(
        "_upload_card.html", job_id=job_id, filename=result.filename, message=message
    )


@bp.post("/upload")
def upload() -> Response:
    """The no-JS upload form: encode each file (waiting up to `UPLOAD_WAIT`), then show the
    accepted ones on `/uploaded` (their job ids in its URL, never their keys in a cookie);
    files refused at admission are named in a message there."""
    files = [f for f in request.files.getlist("file") if f.filename]
    if not files:
        raise BadRequest("Choose at least one image to upload.")
    jobs = receive(files, get_gallery().settings.upload_wait)
    accepted = [job for job in jobs if job.accepted]
    if not accepted:
        raise jobs[0].error
    for job in jobs:
        if not job.accepted:
            flash(f"{job.filename}: {job.error.description}", "error")
    return redirect(url_for("pages.uploaded", job=[job.id for job in accepted]), 303)


@bp.get("/uploaded")
def uploaded() -> Response:
    """The no-JS uploader's result: each `?job=` stored (with its delete key, shown once),
    still encoding, or not stored and why; `no-store`."""
    job_ids = request.args.getlist("job")[: get_gallery().settings.max_files]
    results = [outcome(job_id) for job_id in job_ids]
    if not results:
        raise BadRequest("This link names no upload.")
    return no_store(render_template("uploaded.html", results=results, not_stored=NOT_STORED))


@bp.get(f"/static/vendor/htmx-{HTMX_VERSION}.min.js")
def htmx() -> Response:
    """htmx from the installed `django-js-lib-htmx` package; its URL names the version."""
    response = send_file(HTMX_FILE, mimetype="text/javascript", max_age=ONE_YEAR)
    response.cache_control.public = True
    response.cache_control.immutable = True
    return response


@bp.app_template_global()
def asset_url(filename: str) -> str:
    """The URL of a file in `static/`, busted by its content hash."""
    path = Path(current_app.static_folder, filename)
    return url_for("static", filename=filename, v=_digest(path, path.stat().st_mtime_ns))


@bp.app_template_filter()
def smaller(ratio: float) -> str:
    """A size ratio in words: "47x smaller" (or "1.3x larger" for tiny uploads), with a real x."""
    factor = ratio if ratio >= 1 else 1 / ratio
    shown = f"{factor:.0f}" if factor >= 10 else f"{factor:.1f}"
    return f"{shown}\N{MULTIPLICATION SIGN} {'smaller' if ratio >= 1 else 'larger'}"


@bp.app_template_filter()
def utc(timestamp: float) -> datetime:
    """Unix seconds as an aware UTC datetime (format it with `strftime`/`isoformat`)."""
    return datetime.fromtimestamp(timestamp, UTC)


@bp.app_template_filter()
def thumb_size(record: ImageRecord) -> tuple[int, int]:
    """The (width, height) of an image's `CARD_WIDTH` thumbnail."""
    return thumbnail_size(record.width, record.height, min(CARD_WIDTH, record.width))


@bp.app_template_filter()
def thumb_url(record: ImageRecord, width: int = CARD_WIDTH) -> str:
    """The URL of an image's thumbnail of `width` (one of `THUMB_WIDTHS`), as AVIF."""
    return render_url(record.id, width, "avif")


@bp.app_template_filter()
def thumb_srcset(record: ImageRecord) -> str:
    """An `srcset` of an image's thumbnails (sharp cards on wide and high-DPI screens)."""
    return ", ".join(f"{thumb_url(record, w)} {min(w, record.width)}w" for w in THUMB_WIDTHS)


@bp.app_template_filter()
def picture_url(record: ImageRecord) -> str:
    """The URL of an image's display render as AVIF: its full size when that fits the display
    size (`DISPLAY_SIDE`)."""
    return render_url(record.id, display_width(record.width, record.height), "avif")


@bp.app_template_filter()
def full_url(record: ImageRecord) -> str:
    """The URL of an image's full-size render as AVIF (the viewer loads it when zoomed in)."""
    return render_url(record.id, None, "avif")


@bp.app_template_filter()
def picture_srcset(record: ImageRecord) -> str:
    """An `srcset` of an image page's picture: the largest thumbnail if it is smaller than the
    display render, and the display render; never the full size of a larger image."""
    width = display_width(record.width, record.height) or record.width
    small = [(thumb_url(record, w), w) for w in THUMB_WIDTHS[-1:] if w < width]
    return ", ".join(f"{url} {w}w" for url, w in [*small, (picture_url(record), width)])


@bp.app_template_filter()
def picture_sizes(record: ImageRecord) -> str:
    """The `sizes` of an image page's picture (`PICTURE_SIZES`)."""
    by_height = f"calc((100vh - 10rem) * {record.width / record.height:.4f})"
    return PICTURE_SIZES.format(width=record.width, by_height=by_height)


def _gallery_page() -> tuple[list[ImageRecord], str | None]:
    try:
        return get_gallery().store.list_images(PAGE_SIZE, request.args.get("cursor"))
    except ValueError:
        raise BadRequest("This gallery link is broken: its page cursor is not valid.") from None


@lru_cache(maxsize=64)
def _digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
