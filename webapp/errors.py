"""Typed HTTP errors and the one handler that renders them: JSON under /api/, HTML elsewhere.

JSON: `{"error": {"status", "title", "message"}}`. HTML: `templates/error.html` with
`status`, `title`, `message` (plain text if the template is missing). Headers the error
carries (`Retry-After`, `Allow`) are kept.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from jinja2 import TemplateNotFound
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from codec import CodecError

from .storage import StorageFullError
from .unavailable import RenderUnavailable

log = logging.getLogger(__name__)


class InsufficientStorage(HTTPException):
    """507: the disk is full."""

    code = 507
    description = "The server's disk is full; nothing was stored. Try again later."


def wants_json() -> bool:
    """Whether errors for this request are answered as JSON."""
    return request.path.startswith("/api/")


def error_response(error: HTTPException) -> Response:
    """The JSON or HTML response of an HTTP error."""
    status, title = error.code or 500, error.name
    message = error.description or title
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    if wants_json():
        response = jsonify(error={"status": status, "title": title, "message": message})
    else:
        try:
            body = render_template("error.html", status=status, title=title, message=message)
            response = Response(body, mimetype="text/html")
        except TemplateNotFound:
            response = Response(f"{status} {title}\n\n{message}\n", mimetype="text/plain")
    response.status_code = status
    response.headers.extend(headers)
    return response


def _http_error(error: HTTPException) -> Response:
    if isinstance(error, InternalServerError) and error.original_exception is not None:
        log.error("unhandled error on %s %s", request.method, request.path,
                  exc_info=error.original_exception)  # fmt: skip
        error = InternalServerError()
    return error_response(error)


def _render_unavailable(error: RenderUnavailable) -> Response:
    return error_response(ServiceUnavailable(str(error), retry_after=error.retry_after))


def _storage_full(error: StorageFullError) -> Response:
    log.error("disk full: %s", error)
    return error_response(InsufficientStorage())


def _codec_error(error: CodecError) -> Response:
    log.error("codec error on %s: %s", request.path, error)
    return error_response(InternalServerError(f"This image cannot be rendered: {error}"))


def init_app(app: Flask) -> None:
    """Register the handlers."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RenderUnavailable, _render_unavailable)
    app.register_error_handler(StorageFullError, _storage_full)
    app.register_error_handler(CodecError, _codec_error)
