"""The OpenAPI 3.1 description of the JSON API and media URLs, served at `/api/openapi.json`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from .api import MAX_LIMIT
from .render.sizes import DISPLAY_SIDE, THUMB_WIDTHS
from .storage import ID_PATTERN

bp = Blueprint("openapi", __name__)

_ID = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$", "description": "An image id."}
_ID_PARAM = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _refused(description: str) -> dict[str, Any]:
    """An upload answer with no file accepted: per-file errors, or the request's own."""
    return _json({"anyOf": [_ref("UploadResult"), _ref("Error")]}, description)


_IMAGE_PROPERTIES = {
    "id": _ID,
    "page_url": {"type": "string", "format": "uri"},
    "png_url": {"type": "string", "format": "uri"},
    "latent_url": {"type": "string", "format": "uri"},
    "width": {"type": "integer", "minimum": 1},
    "height": {"type": "integer", "minimum": 1},
    "source_width": {"type": "integer", "minimum": 1, "description": "Width as uploaded."},
    "source_height": {"type": "integer", "minimum": 1, "description": "Height as uploaded."},
    "uploaded_bytes": {"type": "integer", "minimum": 1},
    "latent_bytes": {"type": "integer", "minimum": 1},
    "stored_bytes": {
        "type": "integer",
        "minimum": 1,
        "description": "The latent file and, for an image larger than its display render, its "
        "display latent (what pages show is decoded from it).",
    },
    "display_url": {
        "type": "string",
        "format": "uri",
        "description": "The display render (at most 1024 px a side) as AVIF, as pages show it.",
    },
    "bits_per_pixel": {"type": "number", "exclusiveMinimum": 0},
    "created_at": {"type": "string", "format": "date-time"},
    "method": {"type": "string", "description": "The quantization method of the latent file."},
}
_IMAGE = {
    "type": "object",
    "required": sorted(_IMAGE_PROPERTIES),
    "properties": _IMAGE_PROPERTIES,
    "additionalProperties": False,
}
_NEW_IMAGE = {
    "type": "object",
    "required": [*sorted(_IMAGE_PROPERTIES), "delete_key"],
    "properties": {
        **_IMAGE_PROPERTIES,
        "delete_key": {"type": "string", "description": "Shown once; send as X-Delete-Key."},
    },
    "additionalProperties": False,
}
_ERROR_BODY = {
    "type": "object",
    "required": ["status", "title", "message"],
    "properties": {
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "title": {"type": "string"},
        "message": {"type": "string", "minLength": 1},
    },
}
_FILE_ERROR = {
    "type": "object",
    "required": ["filename", "status", "message"],
    "properties": {
        "filename": {"type": ["string", "null"]},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "message": {"type": "string", "minLength": 1},
    },
}
_JOB_PROPERTIES = {
    "id": {"type": "string", "description": "The upload job's id (a secret: keep it)."},
    "filename": {"type": ["string", "null"]},
    "status_url": {"type": "string", "format": "uri"},
}
_UPLOAD_JOB = {
    "type": "object",
    "required": sorted(_JOB_PROPERTIES),
    "properties": _JOB_PROPERTIES,
    "additionalProperties": False,
}
_UPLOAD_RESULT = {
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {"type": "array", "items": _ref("NewImage")},
        "errors": {"type": "array", "items": _ref("FileError")},
        "jobs": {"type": "array", "items": _ref("UploadJob")},
        "error": _ERROR_BODY,
    },
}
_UPLOAD_STATUS = {
    "oneOf": [
        {
            "type": "object",
            "required": ["status", "image"],
            "properties": {"status": {"const": "stored"}, "image": _ref("NewImage")},
        },
        {
            "type": "object",
            "required": ["status", *sorted(_JOB_PROPERTIES)],
            "properties": {"status": {"const": "pending"}, **_JOB_PROPERTIES},
        },
    ]
}
_BINARY = {"type": "string", "format": "binary"}
_RETRY = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}}
_UNAVAILABLE = {
    "description": "The models are not loaded, the render queue is full or the render "
    "passed its deadline; retry after `Retry-After` seconds.",
    "headers": _RETRY,
}


def _render_path(fmt: str, operation: str, note: str) -> dict[str, Any]:
    """The spec of a render route in `fmt`."""
    return {
        "parameters": [_ID_PARAM],
        "get": {
            "operationId": operation,
            "summary": f"The image decoded to {fmt.upper()}, full size or `w` wide. {note}",
            "parameters": [
                {
                    "name": "w",
                    "in": "query",
                    "description": "A width, or for a portrait larger than "
                    f"{DISPLAY_SIDE} px its display width (its height scaled to {DISPLAY_SIDE}); "
                    "one at least the image's width gives the full size.",
                    "schema": {"type": "integer", "enum": [*THUMB_WIDTHS, DISPLAY_SIDE]},
                },
                {
                    "name": "v",
                    "in": "query",
                    "description": "The decoder version the URL names (as in `png_url`); "
                    "without it the render is served for revalidation (`no-cache`).",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": fmt.upper() + ".",
                    "content": {f"image/{fmt}": {"schema": _BINARY}},
                },
                "302": {"description": "`v` is another decoder's: Location is the current."},
                "304": {"description": "Not modified (If-None-Match matched the ETag)."},
                "400": {"description": "`w` is not one of the image's widths."},
                "404": {"description": "No image has this id."},
                "503": _UNAVAILABLE,
            },
        },
    }


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Latent Gallery",
        "version": "1",
        "description": "Images stored as Stable Diffusion VAE latents, decoded on demand. "
        'Errors under /api/ are JSON: `{"error": {"status", "title", "message"}}`.',
    },
    "paths": {
        "/api/images": {
            "post": {
                "operationId": "uploadImages",
                "summary": "Store one or more images (multipart field `file`, repeatable).",
                "description": "Waits up to `wait` seconds (default and most: "
                "LATENT_GALLERY_UPLOAD_WAIT) for the encodes: 201 if all finished, else 202 "
                "with a job per file still encoding, whose `status_url` gives the result. An "
                "accepted file is always encoded; a 202 is kept in the server's memory only.",
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0},
                        "description": "Seconds to wait for the encodes (capped).",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "array", "items": _BINARY, "minItems": 1}
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_ref("UploadResult"), "At least one image was stored."),
                    "202": _json(
                        _ref("UploadResult"),
                        "Accepted: `jobs` lists the files still encoding (see their status URL).",
                    ),
                    "400": _refused("No file, or no file is an acceptable image."),
                    "403": _error("Cross-site request, or a session without its CSRF token."),
                    "413": _refused(
                        "The request is larger than the upload limit, or brings more than "
                        "`LATENT_GALLERY_MAX_FILES` files and none of the first was accepted."
                    ),
                    "429": {
                        **_refused(
                            "No file was accepted: the first is over this address's budget "
                            "of files or megapixels."
                        ),
                        "headers": _RETRY,
                    },
                    "503": {
                        **_refused(
                            "The encode queue is full or the models are not loaded; no file "
                            "was accepted: send again after `Retry-After` seconds."
                        ),
                        "headers": _RETRY,
                    },
                    "507": _refused("The server's disk is full; no file was stored."),
                },
            },
            "get": {
                "operationId": "listImages",
                "summary": "A page of images, newest first.",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "`next_cursor` of the previous page.",
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["images", "next_cursor", "next_url"],
                            "properties": {
                                "images": {"type": "array", "items": _ref("Image")},
                                "next_cursor": {"type": ["string", "null"]},
                                "next_url": {"type": ["string", "null"], "format": "uri"},
                            },
                        },
                        "The page; `next_cursor` is null on the last one.",
                    ),
                    "400": _error("Bad `limit` or `cursor`."),
                },
            },
        },
        "/api/images/{image_id}": {
            "parameters": [_ID_PARAM],
            "get": {
                "operationId": "getImage",
                "summary": "One image's metadata.",
                "responses": {
                    "200": _json(_ref("Image"), "The image."),
                    "404": _error("No image has this id."),
                },
            },
            "delete": {
                "operationId": "deleteImage",
                "summary": "Delete an image with its delete key.",
                "parameters": [
                    {"name": "X-Delete-Key", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "204": {"description": "Deleted."},
                    "403": _error("The delete key is missing or wrong."),
                    "404": _error("No image has this id."),
                },
            },
        },
        "/api/uploads/{job_id}": {
            "parameters": [
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "get": {
                "operationId": "getUpload",
                "summary": "An upload job: still encoding, stored, failed, or not stored.",
                "responses": {
                    "200": _json(
                        _UPLOAD_STATUS,
                        "Stored: the image (with `delete_key` the first time only).",
                    ),
                    "202": {
                        **_json(_UPLOAD_STATUS, "Still encoding: ask again."),
                        "headers": _RETRY,
                    },
                    "400": _error("The file is not an acceptable image."),
                    "404": _error(
                        "Not stored (the server restarted before the encode finished, or the "
                        "image was deleted): send the file again."
                    ),
                    "500": _error("The encode failed; nothing was stored."),
                    "507": _error("The server's disk is full; nothing was stored."),
                },
            },
        },
        "/i/{image_id}.png": _render_path("png", "getPng", "Full size, for downloads."),
        "/i/{image_id}.avif": _render_path(
            "avif", "getAvif", "What pages show: 4:4:4, at least 40 dB PSNR from the PNG."
        ),
        "/i/{image_id}.sdz": {
            "parameters": [_ID_PARAM],
            "get": {
                "operationId": "getLatentFile",
                "summary": "The stored latent file (see docs/FORMAT.md).",
                "responses": {
                    "200": {
                        "description": "The .sdz file.",
                        "content": {"application/octet-stream": {"schema": _BINARY}},
                    },
                    "404": {"description": "No image has this id."},
                },
            },
        },
        "/i/{image_id}.preview.webp": {
            "parameters": [_ID_PARAM],
            "get": {
                "operationId": "getPreview",
                "summary": "The preview: the latent mapped to RGB at 1/8 of the display size, "
                "with no model.",
                "responses": {
                    "200": {
                        "description": "Lossy WebP.",
                        "content": {"image/webp": {"schema": _BINARY}},
                    },
                    "304": {"description": "Not modified (If-None-Match matched the ETag)."},
                    "404": {"description": "No image has this id, or no map for its space."},
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Whether the models are loaded (loading them on first call).",
                "responses": {
                    "200": _json({"type": "object", "required": ["status"]}, "Ready."),
                    "503": _json(
                        {
                            "type": "object",
                            "required": ["status", "cause"],
                            "properties": {
                                "status": {"const": "unavailable"},
                                "cause": {"type": "string"},
                            },
                        },
                        "The models cannot be loaded; `cause` says why.",
                    ),
                },
            },
        },
    },
    "components": {
        "schemas": {
            "Image": _IMAGE,
            "NewImage": _NEW_IMAGE,
            "FileError": _FILE_ERROR,
            "UploadResult": _UPLOAD_RESULT,
            "UploadJob": _UPLOAD_JOB,
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": _ERROR_BODY},
            },
        }
    },
}


@bp.get("/api/openapi.json")
def openapi() -> dict[str, Any]:
    """The spec, with this server's URL."""
    return {**SPEC, "servers": [{"url": request.host_url.rstrip("/")}]}
