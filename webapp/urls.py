"""Absolute URLs from the configured origin, and responses that no cache may keep.

Links that leave the page (share links, `og:url`, the API's URLs) are built on `BASE_URL`,
never on the request's `Host` header, which any client can set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Response, make_response, url_for

from .gallery import get_gallery


def absolute_url(endpoint: str, **values: Any) -> str:
    """The URL of `endpoint` on the site's public origin (`BASE_URL`)."""
    return get_gallery().settings.origin + url_for(endpoint, **values)


def no_store(
    body: Any, status: int = 200, headers: Iterable[tuple[str, str]] | dict[str, str] = ()
) -> Response:
    """A response that caches must not keep (it shows a delete key, or may): `no-store`."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    response = make_response(body, status)
    response.headers.extend((k, v) for k, v in pairs if k.lower() != "content-type")
    response.cache_control.no_store = True
    return response
