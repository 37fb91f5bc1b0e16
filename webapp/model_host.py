"""The process's codec: loaded on first use, a failed load retried with exponential backoff.

`require()` returns the loaded codec or raises `ModelUnavailableError`. A
failed load is not kept for the life of the process: the next call after `retry_at` tries
again (1 s, then 2, 4, ... up to 60 s apart), so weights fixed on disk or a hub that comes
back are picked up without a restart, and calls in between fail at once instead of each
trying a load. `error` (logged, never shown to clients) says why the models are missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from codec import Codec

from .unavailable import ModelUnavailableError

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


class ModelHost:
    """Loads the codec from `factory` on first use; `when_loaded` runs code after the load."""

    def __init__(
        self,
        factory: Callable[[], Codec],
        *,
        retry_first: float = RETRY_FIRST_S,
        retry_max: float = RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._retry_first = self._backoff = retry_first
        self._retry_max = retry_max
        self._clock = clock
        self._lock = threading.Lock()
        self._on_load: list[Callable[[Codec], None]] = []
        self.codec: Codec | None = None
        self.error: str | None = None
        self.attempts = 0
        self.retry_at = 0.0

    def require(self) -> Codec:
        """The loaded codec, loading it if none is and a retry is due; else
        `ModelUnavailableError` with the last load's error."""
        codec = self.codec
        if codec is not None:
            return codec
        with self._lock:
            if self.codec is None and self._clock() >= self.retry_at:
                self._load()
            codec, callbacks = self.codec, self._on_load
            if codec is not None:
                self._on_load = []
        if codec is None:
            raise ModelUnavailableError("the models are not loaded; the server's log says why")
        for callback in callbacks:
            callback(codec)
        return codec

    def when_loaded(self, callback: Callable[[Codec], None]) -> None:
        """Call `callback(codec)` once the models are loaded: now if they are, else after the
        load that succeeds (in the thread that loaded them)."""
        with self._lock:
            if self.codec is None:
                self._on_load.append(callback)
                return
        callback(self.codec)

    def _load(self) -> None:
        self.attempts += 1
        try:
            codec = self._factory()
            codec.load()
        except Exception as exc:  # any failure (bad weights, no network, out of memory) retries
            self.error = f"{type(exc).__name__}: {exc}"
            self.retry_at = self._clock() + self._backoff
            log.error("cannot load the models: %s (retry in %g s)", self.error, self._backoff)
            self._backoff = min(2 * self._backoff, self._retry_max)
            return
        self.codec, self.error, self._backoff = codec, None, self._retry_first
        log.info("models loaded: decoder %s", codec.decoder.describe())
