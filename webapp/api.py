"""The JSON API: upload, list, get and delete images (the page uses the same endpoints)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, NotFound
from werkzeug.http import HTTP_STATUS_CODES

from .gallery import get_gallery, record_or_404
from .media import render_url
from .render.sizes import display_width
from .storage import ImageRecord
from .upload_flow import NOT_STORED, Outcome, outcome, outcome_of, receive
from .urls import absolute_url, no_store

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_LIMIT = 24
MAX_LIMIT = 100


def image_json(record: ImageRecord, delete_key: str | None = None) -> dict[str, Any]:
    """The API's view of an image (with its delete key only right after the upload)."""
    body = {
        "id": record.id,
        "page_url": absolute_url("pages.image", image_id=record.id),
        "png_url": render_url(record.id, external=True),
        "latent_url": absolute_url("media.latent", image_id=record.id),
        "width": record.width,
        "height": record.height,
        "source_width": record.source_size[0],
        "source_height": record.source_size[1],
        "uploaded_bytes": record.uploaded_bytes,
        "latent_bytes": record.latent_bytes,
        "stored_bytes": record.stored_bytes,
        "display_url": render_url(
            record.id, display_width(record.width, record.height), "avif", external=True
        ),
        "bits_per_pixel": round(record.bits_per_pixel, 4),
        "created_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
        "method": record.method,
    }
    if delete_key is not None:
        body["delete_key"] = delete_key
    return body


@bp.post("/images")
def upload() -> Response:
    """Store each multipart `file`: 201 when all finished within `?wait=` seconds (default and
    most `UPLOAD_WAIT`), 202 with a status URL for each file still encoding; per-file errors
    (admission: `upload_flow.accept`) under `errors`. With no file accepted, the first file's
    error is the status (429 or 503 with `Retry-After` when a limit refused it)."""
    files = request.files.getlist("file")
    if not files:
        raise BadRequest('Send one or more images in the multipart form field "file".')
    outcomes = [outcome_of(job) for job in receive(files, upload_wait())]
    images = [image_json(o.record, o.delete_key) for o in outcomes if o.record is not None]
    errors = [file_error(o.filename, o.error) for o in outcomes if o.error is not None]
    pending = [job_json(o) for o in outcomes if o.pending]
    body: dict[str, Any] = {"images": images}
    if errors:
        body["errors"] = errors
    if pending:
        body["jobs"] = pending
        return no_store(body, 202)
    if images:
        return no_store(body, 201)
    first = next(o.error for o in outcomes if o.error is not None)
    status = first.code
    body["error"] = {
        "status": status, "title": HTTP_STATUS_CODES[status], "message": first.description,
    }  # fmt: skip
    return no_store(body, status, first.get_headers())


@bp.get("/uploads/<job_id>")
def upload_status(job_id: str) -> Response:
    """An upload job: 202 while encoding, 200 with the image once stored (its delete key the
    first time), the file's error (4xx/5xx), or 404 when the upload was not stored."""
    result = outcome(job_id)
    if result.record is not None:
        return no_store({"status": "stored", "image": image_json(result.record, result.delete_key)})
    if result.pending:
        return no_store({"status": "pending", **job_json(result)}, 202, {"Retry-After": "1"})
    if result.error is not None:
        raise result.error
    raise NotFound(NOT_STORED)


def upload_wait() -> float:
    """The `wait` query argument: seconds from 0, at most `UPLOAD_WAIT` (its default)."""
    most = get_gallery().settings.upload_wait
    text = request.args.get("wait")
    if text is None:
        return most
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not wait >= 0:  # also NaN
        raise BadRequest(f"wait must be a number of seconds from 0 (at most {most:g} is used).")
    return min(wait, most)


def file_error(filename: str | None, error: HTTPException) -> dict[str, Any]:
    """The `errors` entry of a file that was not stored."""
    return {"filename": filename, "status": error.code, "message": error.description}


def job_json(pending: Outcome) -> dict[str, Any]:
    """A pending upload: its job id, file name and status URL."""
    url = absolute_url("api.upload_status", job_id=pending.job_id)
    return {"id": pending.job_id, "filename": pending.filename, "status_url": url}


@bp.get("/images")
def list_images() -> dict[str, Any]:
    """A page of images, newest first; `next_cursor` is null on the last page."""
    limit = request.args.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= (limit := int(limit)) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.")
    try:
        records, cursor = get_gallery().store.list_images(limit, request.args.get("cursor"))
    except ValueError:
        raise BadRequest("The cursor is not valid; start again without it.") from None
    next_url = absolute_url("api.list_images", limit=limit, cursor=cursor) if cursor else None
    return {"images": [image_json(r) for r in records], "next_cursor": cursor, "next_url": next_url}


@bp.get("/images/<image_id>")
def get_image(image_id: str) -> dict[str, Any]:
    """One image's metadata."""
    return image_json(record_or_404(image_id))


@bp.delete("/images/<image_id>")
def delete_image(image_id: str) -> Response:
    """Delete with the `X-Delete-Key` header: 204, 403 (wrong or missing key), 404."""
    record_or_404(image_id)
    gallery = get_gallery()
    if not gallery.store.delete(image_id, request.headers.get("X-Delete-Key")):
        raise Forbidden("The delete key is missing or wrong.")
    gallery.cache.discard_where(lambda key: key[0] == image_id)
    return Response(status=204)
