"""A thread-safe LRU of rendered bytes (PNG, AVIF, previews), bounded by their total size."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class ByteLRU:
    """Least-recently-used bytes values; holds at most `max_bytes` in total."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` is held (its place in the LRU order unchanged)."""
        return key in self._items

    def get(self, key: Hashable) -> bytes | None:
        """The value of `key` (now most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        """Store a value, evicting the least recently used; one larger than the bound is skipped."""
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    def discard_where(self, predicate) -> None:
        """Drop every entry whose key satisfies `predicate`."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                self._bytes -= len(self._items.pop(key))
