"""Response headers, CSRF protection and the upload rate limit.

CSRF rule: a state-changing request (POST, PUT, PATCH, DELETE) that carries the session
cookie must send the session's token, in the `X-CSRF-Token` header (the page's XHR, htmx)
or the `csrf_token` form field (no-JS forms); otherwise 403. A request without the session
cookie is an API client (curl, scripts) and needs no token: it carries no ambient
credentials to abuse (nothing here is authenticated by cookie; deletes need the
`X-Delete-Key` header, which no cross-site form can send). Browsers that label a request
`Sec-Fetch-Site: cross-site` are refused either way. The session cookie is SameSite=Lax
(set in `create_app`).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time

from flask import Flask, Response, current_app, request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from werkzeug.exceptions import Forbidden, TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'self'"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
KEY_PREFIX = "latent_gallery"
UPLOAD_SCOPE = "uploads"
REDIS_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


def csrf_token() -> str:
    """This session's CSRF token (created on first use); a Jinja global."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def check_csrf() -> None:
    """Before each request: apply the CSRF rule of this module's docstring."""
    if request.method not in UNSAFE_METHODS:
        return
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise Forbidden("Cross-site requests are not accepted.")
    if current_app.config["SESSION_COOKIE_NAME"] not in request.cookies:
        return
    expected = session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise Forbidden("The form's CSRF token is missing or stale; reload the page and retry.")


def limit_uploads() -> None:
    """Count one upload against the client's budget (shared by every node through Redis when
    `REDIS_URL` is set) or raise 429 with `Retry-After`.

    The client is `request.remote_addr`: the real client address when `TRUSTED_PROXIES`
    matches the proxies in front (see `init_app`). While Redis cannot be reached the upload is
    let through (logged): the bounded encode queue still caps the work, and an outage of the
    limiter's store does not stop every upload.
    """
    limiter: Limiter = current_app.extensions["latent_gallery.upload_limiter"]
    rate: RateLimitItem = current_app.extensions["latent_gallery.upload_rate"]
    key = (KEY_PREFIX, UPLOAD_SCOPE, request.remote_addr or "unknown")
    try:
        if limiter.limiter.hit(rate, *key):
            return
    except StorageError as error:
        log.warning("upload rate limit not applied, its store is unreachable: %s", error)
        return
    current_app.extensions["latent_gallery.metrics"].rejected.labels("rate_limit").inc()
    reset = limiter.limiter.get_window_stats(rate, *key).reset_time
    raise TooManyRequests(
        "Too many uploads from your address; wait a moment and retry.",
        retry_after=max(1, math.ceil(reset - time.time())),
    )


def set_headers(response: Response) -> Response:
    """After each request: CSP, nosniff, referrer policy."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def init_app(app: Flask) -> None:
    """Install the CSRF check, the headers, the `csrf_token` global, the upload limiter
    (flask-limiter: in memory, or in Redis at `REDIS_URL`) and, with `TRUSTED_PROXIES` > 0,
    werkzeug's `ProxyFix` trusting that many hops of `X-Forwarded-For/-Proto/-Host`."""
    hops = app.config["TRUSTED_PROXIES"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    count, period = app.config["UPLOAD_RATE"]
    app.extensions["latent_gallery.upload_rate"] = RateLimitItemPerSecond(count, int(period))
    app.extensions["latent_gallery.upload_limiter"] = Limiter(
        get_remote_address,
        app=app,
        storage_uri=app.config["REDIS_URL"] or "memory://",
        storage_options={
            "wrap_exceptions": True,
            **({"socket_timeout": REDIS_TIMEOUT_S} if app.config["REDIS_URL"] else {}),
        },
        strategy="moving-window",
    )
    app.before_request(check_csrf)
    app.after_request(set_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
