"""Response headers, CSRF protection and the upload budget of each client.

CSRF rule: a state-changing request (POST, PUT, PATCH, DELETE) from another site is refused
(403): one whose `Origin` (or, without it, `Referer`) is not this site's (`BASE_URL`, or the
origin the request was sent to), or that browsers label `Sec-Fetch-Site: cross-site`. One
that carries the session cookie must also send the session's token, in the `X-CSRF-Token`
header (the page's XHR, htmx) or the `csrf_token` form field (no-JS forms). A request with
none of these headers is an API client (curl, scripts) and needs no token: it carries no
ambient credentials to abuse (nothing here is authenticated by cookie; deletes need the
`X-Delete-Key` header, which no cross-site form can send). The session cookie is
SameSite=Lax, and Secure when `BASE_URL` is https (set in `create_app`).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from werkzeug.exceptions import Forbidden, TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from .gallery import get_gallery
from .metrics import Metrics
from .settings import Settings

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
    sender = request.headers.get("Origin") or _origin_of(request.headers.get("Referer"))
    own = {get_gallery().settings.origin, request.host_url.rstrip("/")}
    cross_site = request.headers.get("Sec-Fetch-Site") == "cross-site"
    if cross_site or (sender is not None and sender not in own):
        raise Forbidden("Cross-site requests are not accepted.")
    if current_app.config["SESSION_COOKIE_NAME"] not in request.cookies:
        return
    expected = session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise Forbidden("The form's CSRF token is missing or stale; reload the page and retry.")


class UploadBudget:
    """Each client's upload budget: files (`UPLOAD_RATE`) and megapixels (`UPLOAD_MEGAPIXELS`)
    per period, in flask-limiter's moving windows, in memory or, with `REDIS_URL`, in Redis
    shared by every node."""

    def __init__(self, app: Flask, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.rates: dict[str, RateLimitItem] = {
            unit: RateLimitItemPerSecond(count, int(period))
            for unit, (count, period) in (
                ("files", settings.upload_rate), ("megapixels", settings.upload_megapixels)
            )
        }  # fmt: skip
        redis = settings.redis_url
        self.limiter = Limiter(
            get_remote_address,
            app=app,
            storage_uri=redis or "memory://",
            storage_options={
                "wrap_exceptions": True,
                **({"socket_timeout": REDIS_TIMEOUT_S} if redis else {}),
            },
            strategy="moving-window",
        ).limiter

    def charge(self, pixels: int, client: str) -> TooManyRequests | None:
        """Count one file of `pixels` (as stored; 0 for a file that is no acceptable image)
        against `client`'s budgets; the 429 (with `Retry-After`) of the budget it is over, or
        None when it was counted.

        The client is the request's address: the real client address when `TRUSTED_PROXIES`
        matches the proxies in front (see `init_app`). While Redis cannot be reached the file
        is let through (logged): the bounded encode queue still caps the work, and an outage
        of the limiter's store does not stop every upload.
        """
        costs = {"files": 1, **({"megapixels": math.ceil(pixels / 1e6)} if pixels else {})}
        keys = {unit: (KEY_PREFIX, UPLOAD_SCOPE, unit, client) for unit in costs}
        try:
            for unit, cost in costs.items():
                if not self.limiter.test(self.rates[unit], *keys[unit], cost=cost):
                    return self._over_budget(self.rates[unit], keys[unit], unit)
            for unit, cost in costs.items():
                self.limiter.hit(self.rates[unit], *keys[unit], cost=cost)
        except StorageError as error:
            log.warning("upload rate limit not applied, its store is unreachable: %s", error)
        return None

    def _over_budget(self, rate: RateLimitItem, key: tuple[str, ...], unit: str) -> TooManyRequests:
        """The 429 of a client over its budget of `unit` (files or megapixels) per period."""
        self.metrics.rejected.labels("rate_limit").inc()
        reset = self.limiter.get_window_stats(rate, *key).reset_time
        period = rate.get_expiry()
        return TooManyRequests(
            f"Too many uploads from your address: at most {rate.amount} {unit} per {period:g} s; "
            "this file was not stored. Wait a moment and retry.",
            retry_after=max(1, math.ceil(reset - time.time())),
        )


def _origin_of(url: str | None) -> str | None:
    """`"https://a.example/x?y"` -> `"https://a.example"`; None for None."""
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def set_headers(response: Response) -> Response:
    """After each request: CSP, nosniff, referrer policy."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def init_app(app: Flask, settings: Settings) -> None:
    """Install the CSRF check, the headers, the `csrf_token` global and, with
    `TRUSTED_PROXIES` > 0, werkzeug's `ProxyFix` trusting that many hops of
    `X-Forwarded-For/-Proto/-Host`."""
    hops = settings.trusted_proxies
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.before_request(check_csrf)
    app.after_request(set_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
