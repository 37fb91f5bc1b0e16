"""Single-flight: concurrent callers asking for the same key share one computation.

The first caller of a key becomes its leader and must settle it (`resolve` or `fail`); every
caller until then gets the same `Future`. Once settled the key is free again, so results are
not kept here: cache them before settling, and look in the cache after `claim` makes you leader
(a caller that missed the cache just before a settle then finds the value there).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Keys in flight, each with the one `Future` all its callers wait on."""

    def __init__(self) -> None:
        self._flights: dict[K, Future[V]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def claim(self, key: K) -> tuple[Future[V], bool]:
        """The key's future, and whether this caller leads (started the flight, must settle it)."""
        with self._lock:
            future = self._flights.get(key)
            if future is not None:
                return future, False
            future = self._flights[key] = Future()
            return future, True

    def resolve(self, key: K, value: V) -> None:
        """End the key's flight with `value` (nothing happens if it is not in flight)."""
        future = self._pop(key)
        if future is not None:
            future.set_result(value)

    def fail(self, key: K, error: BaseException) -> None:
        """End the key's flight with `error` raised to every caller."""
        future = self._pop(key)
        if future is not None:
            future.set_exception(error)

    def _pop(self, key: K) -> Future[V] | None:
        with self._lock:
            return self._flights.pop(key, None)
