"""Why a render could not be served now: errors answered 503 with `Retry-After`."""

from __future__ import annotations

RETRY_AFTER_S = 2


class RenderUnavailable(Exception):
    """A render refused or abandoned: answered 503 with `Retry-After`."""

    reason = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.retry_after = RETRY_AFTER_S


class QueueFullError(RenderUnavailable):
    """The decode queue is full."""

    reason = "queue_full"


class DeadlineError(RenderUnavailable):
    """The decode did not finish within the deadline."""

    reason = "deadline"


class ModelUnavailableError(RenderUnavailable):
    """The models could not be loaded (the message says why)."""

    reason = "model_unavailable"
