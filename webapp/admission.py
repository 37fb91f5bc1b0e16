"""Request threads that wait on slow work: a bounded resource, lent per client.

gunicorn serves with `THREADS` request threads. A request that waits for a render or for its
upload's encodes holds one for seconds, so `WaitSlots` lends at most `total` of them at once
(all threads but `RESERVED_THREADS`, which stay free for `/healthz`, pages, previews and cached
PNGs) and at most `per_client` to one client address (a browser's six HTTP/1.1 connections to a
host), so one client's burst leaves room for everyone else. A request that finds no slot is
answered at once, never queued: a render with 503 + `Retry-After` (`BusyError`), an upload
with 202 and its status URL (its files are already accepted).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from flask import request

from .unavailable import RenderUnavailable

RESERVED_THREADS = 4
PER_CLIENT = 6


class BusyError(RenderUnavailable):
    """Too many requests already wait on renders (in all, or from this client)."""

    reason = "busy"


class WaitSlots:
    """At most `total` waiting requests at once, at most `per_client` from one client."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def for_threads(cls, threads: int) -> WaitSlots:
        """The slots of a server with `threads` request threads (`RESERVED_THREADS` kept)."""
        total = max(1, threads - RESERVED_THREADS)
        return cls(total, max(1, min(PER_CLIENT, total // 2)))

    @property
    def held(self) -> int:
        """Slots lent now."""
        return self._held.total()

    @contextmanager
    def slot(self, client: str) -> Iterator[bool]:
        """Hold a slot for `client` while the block runs if one is free; yields whether."""
        with self._lock:
            got = self._held.total() < self.total and self._held[client] < self.per_client
            if got:
                self._held[client] += 1
        try:
            yield got
        finally:
            if got:
                with self._lock:
                    self._held[client] -= 1
                    if not self._held[client]:
                        del self._held[client]


def client_address() -> str:
    """The current request's client address (the real one behind `TRUSTED_PROXIES`)."""
    return request.remote_addr or "unknown"
