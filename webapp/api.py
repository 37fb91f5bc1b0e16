"""The JSON API: upload, list, get and delete images (the page uses the same endpoints)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from .ingest import ingest
from .media import png_url
from .security import limit_uploads
from .storage import ImageRecord, get_record_or_404, get_store

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_LIMIT = 24
MAX_LIMIT = 100


def image_json(record: ImageRecord, delete_key: str | None = None) -> dict[str, Any]:
    """The API's view of an image (with its delete key only right after the upload)."""
    body = {
        "id": record.id,
        "page_url": url_for("pages.image", image_id=record.id, _external=True),
        "png_url": png_url(record.id, external=True),
        "latent_url": url_for("media.latent", image_id=record.id, _external=True),
        "width": record.width,
        "height": record.height,
        "uploaded_bytes": record.uploaded_bytes,
        "latent_bytes": record.latent_bytes,
        "bits_per_pixel": round(record.bits_per_pixel, 4),
        "created_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
        "method": record.method,
    }
    if delete_key is not None:
        body["delete_key"] = delete_key
    return body


@bp.post("/images")
def upload() -> tuple[dict[str, Any], int]:
    """Store each multipart `file`: 201 if any succeeded; per-file errors under `errors`."""
    limit_uploads()
    files = request.files.getlist("file")
    if not files:
        raise BadRequest('Send one or more images in the multipart form field "file".')
    images, errors = [], []
    for upload in files:
        try:
            images.append(image_json(*ingest(upload)))
        except HTTPException as error:
            errors.append(
                {"filename": upload.filename, "status": error.code, "message": error.description}
            )
    body: dict[str, Any] = {"images": images}
    if errors:
        body["errors"] = errors
    if images:
        return body, 201
    status = errors[0]["status"]
    body["error"] = {
        "status": status, "title": HTTP_STATUS_CODES[status], "message": errors[0]["message"],
    }  # fmt: skip
    return body, status


@bp.get("/images")
def list_images() -> dict[str, Any]:
    """A page of images, newest first; `next_cursor` is null on the last page."""
    limit = request.args.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= (limit := int(limit)) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.")
    try:
        records, cursor = get_store().list_images(limit, request.args.get("cursor"))
    except ValueError:
        raise BadRequest("The cursor is not valid; start again without it.") from None
    next_url = (
        url_for(".list_images", limit=limit, cursor=cursor, _external=True) if cursor else None
    )
    return {"images": [image_json(r) for r in records], "next_cursor": cursor, "next_url": next_url}


@bp.get("/images/<image_id>")
def get_image(image_id: str) -> dict[str, Any]:
    """One image's metadata."""
    return image_json(get_record_or_404(image_id))


@bp.delete("/images/<image_id>")
def delete_image(image_id: str) -> Response:
    """Delete with the `X-Delete-Key` header: 204, 403 (wrong or missing key), 404."""
    get_record_or_404(image_id)
    if not get_store().delete(image_id, request.headers.get("X-Delete-Key")):
        raise Forbidden("The delete key is missing or wrong.")
    current_app.extensions["latent_gallery.cache"].discard_where(lambda key: key[0] == image_id)
    return Response(status=204)
