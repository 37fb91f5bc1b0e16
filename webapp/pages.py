"""Browser pages: gallery, image pages, htmx fragments, the no-JS upload form, htmx itself."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

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

from .media import ONE_YEAR, render_url
from .png import THUMB_WIDTHS, display_size, display_width
from .storage import ImageRecord, get_record_or_404, get_store
from .uploads import NOT_STORED, accept, lookup, take_delete_key, wait_for
from .urls import absolute_url, no_store

bp = Blueprint("pages", __name__)

PAGE_SIZE = 24
THUMB_WIDTH = THUMB_WIDTHS[0]  # the card's src; the larger widths go in its srcset
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
    return render_template("_card.html", image=get_record_or_404(image_id))


@bp.get("/i/<image_id>")
def image(image_id: str) -> str:
    """One image with its facts, share link, downloads and delete button."""
    record = get_record_or_404(image_id)
    newer, older = get_store().neighbours(record.id)
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
    job, record = lookup(job_id)
    if record is not None:
        key = take_delete_key(job) if job is not None else None
        html = render_template("_card.html", image=record, delete_key=key, upload_job=job_id)
        return no_store(html)
    filename = job.filename if job is not None else None
    if job is not None and job.pending:
        return render_template("_upload_card.html", job_id=job_id, filename=filename)
    message = job.error.description if job is not None and job.error else NOT_STORED
    return render_template("_upload_card.html", job_id=job_id, filename=filename, message=message)


@bp.post("/upload")
def upload() -> Response:
    """The no-JS upload form: encode each file (waiting up to `UPLOAD_WAIT`), then show the
    accepted ones on `/uploaded` (their job ids in its URL, never their keys in a cookie);
    files refused at admission are named in a message there."""
    files = [f for f in request.files.getlist("file") if f.filename]
    if not files:
        raise BadRequest("Choose at least one image to upload.")
    jobs = accept(files)
    accepted = [job for job in jobs if job.accepted]
    if not accepted:
        raise jobs[0].error
    wait_for(accepted, current_app.config["UPLOAD_WAIT"])
    for job in jobs:
        if not job.accepted:
            flash(f"{job.filename}: {job.error.description}", "error")
    return redirect(url_for("pages.uploaded", job=[job.id for job in accepted]), 303)


@bp.get("/uploaded")
def uploaded() -> Response:
    """The no-JS uploader's result: each `?job=` stored (with its delete key, shown once),
    still encoding, or not stored and why; `no-store`."""
    job_ids = request.args.getlist("job")[: current_app.config["MAX_FILES"]]
    results = [_upload_result(job_id) for job_id in job_ids]
    if not results:
        raise BadRequest("This link names no upload.")
    return no_store(render_template("uploaded.html", results=results, not_stored=NOT_STORED))


def _upload_result(job_id: str) -> dict[str, Any]:
    """What `/uploaded` shows of one job: its record and key (once), pending, or its error."""
    job, record = lookup(job_id)
    return {
        "record": record,
        "key": take_delete_key(job) if job is not None and record is not None else None,
        "pending": job is not None and job.pending,
        "error": job.error.description if job is not None and job.error else None,
        "filename": job.filename if job is not None else None,
    }


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
    """The (width, height) of an image's `THUMB_WIDTH` thumbnail."""
    return thumbnail_size(record.width, record.height, min(THUMB_WIDTH, record.width))


@bp.app_template_filter()
def thumb_url(record: ImageRecord, width: int = THUMB_WIDTH) -> str:
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
        return get_store().list_images(PAGE_SIZE, request.args.get("cursor"))
    except ValueError:
        raise BadRequest("This gallery link is broken: its page cursor is not valid.") from None


@lru_cache(maxsize=64)
def _digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
