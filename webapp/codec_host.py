"""The app's codec: its settings checked at start, its models loaded on first use, a failed load
retried with exponential backoff.

`codec` is there from the start (`codec.load_codec` validated its settings and loaded nothing),
so what needs no model (a render's URL and version, the pixel limit) never waits for one.
`require()` returns it with its models loaded, or raises `ModelUnavailableError`. A failed load
is not kept for the life of the process: the next call after `retry_at` tries again (1 s, then
2, 4, ... up to 60 s apart), so weights fixed on disk or a hub that comes back are picked up
without a restart, and calls in between fail at once instead of each trying a load. `error`
(logged, never shown to clients) says why the models are missing.
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


class CodecHost:
    """Holds the codec; loads its models on first `require`; `when_loaded` runs code after."""

    def __init__(
        self,
        codec: Codec,
        *,
        retry_first: float = RETRY_FIRST_S,
        retry_max: float = RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.codec = codec
        self._retry_first = self._backoff = retry_first
        self._retry_max = retry_max
        self._clock = clock
        self._lock = threading.Lock()
        self._on_load: list[Callable[[Codec], None]] = []
        self.loaded = False
        self.error: str | None = None
        self.attempts = 0
        self.retry_at = 0.0

    def require(self) -> Codec:
        """The codec with its models loaded, loading them if they are not and a retry is due;
        else `ModelUnavailableError`."""
        if self.loaded:
            return self.codec
        with self._lock:
            if not self.loaded and self._clock() >= self.retry_at:
                self._load()
            loaded, callbacks = self.loaded, self._on_load
            if loaded:
                self._on_load = []
        if not loaded:
            raise ModelUnavailableError("the models are not loaded; the server's log says why")
        for callback in callbacks:
            callback(self.codec)
        return self.codec

    def when_loaded(self, callback: Callable[[Codec], None]) -> None:
        """Call `callback(codec)` once the models are loaded: now if they are, else after the
        load that succeeds (in the thread that loaded them)."""
        with self._lock:
            if not self.loaded:
                self._on_load.append(callback)
                return
        callback(self.codec)

    def _load(self) -> None:
        self.attempts += 1
        try:
            self.codec.load()
        except Exception as exc:  # any failure (bad weights, no network, out of memory) retries
            self.error = f"{type(exc).__name__}: {exc}"
            self.retry_at = self._clock() + self._backoff
            log.error("cannot load the models: %s (retry in %g s)", self.error, self._backoff)
            self._backoff = min(2 * self._backoff, self._retry_max)
            return
        self.loaded, self.error, self._backoff = True, None, self._retry_first
        log.info("models loaded: decoder %s", self.codec.decoder.describe())
