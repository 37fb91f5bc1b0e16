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
import math
import secrets
import threading
import time

from flask import Flask, Response, current_app, request, session
from werkzeug.exceptions import Forbidden, TooManyRequests

CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'self'"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


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


class TokenBucket:
    """Per-client token buckets: `rate` requests per `period` seconds, bursts up to `rate`."""

    def __init__(self, rate: int, period: float, max_clients: int = 10_000) -> None:
        self.capacity = rate
        self.refill = rate / period
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Take a token: 0 if allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            if tokens >= 1:
                if len(self._buckets) >= self.max_clients and client not in self._buckets:
                    self._prune(now)
                self._buckets[client] = (tokens - 1, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.refill

    def _prune(self, now: float) -> None:
        """Forget clients whose bucket has refilled (they are as good as new)."""
        full = [c for c, (t, last) in self._buckets.items()
                if t + (now - last) * self.refill >= self.capacity]  # fmt: skip
        for client in full:
            del self._buckets[client]


def limit_uploads() -> None:
    """Spend one of the client's upload tokens or raise 429 with `Retry-After`.

    The client is `request.remote_addr`; behind a reverse proxy, wrap the app in
    `werkzeug.middleware.proxy_fix.ProxyFix` so that is the real client address.
    """
    limiter: TokenBucket = current_app.extensions["latent_gallery.upload_limiter"]
    wait = limiter.take(request.remote_addr or "unknown")
    if wait:
        current_app.extensions["latent_gallery.metrics"].rejected.labels("rate_limit").inc()
        raise TooManyRequests(
            "Too many uploads from your address; wait a moment and retry.",
            retry_after=math.ceil(wait),
        )


def set_headers(response: Response) -> Response:
    """After each request: CSP, nosniff, referrer policy."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def init_app(app: Flask) -> None:
    """Install the CSRF check, the headers, the `csrf_token` global and the upload limiter."""
    rate, period = app.config["UPLOAD_RATE"]
    app.extensions["latent_gallery.upload_limiter"] = TokenBucket(rate, period)
    app.before_request(check_csrf)
    app.after_request(set_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
