"""Errors a user of genq can cause or observe.

Every error carries a stable machine-readable ``code`` and the HTTP status the API
answers with, so the server, the clients and the CLI all speak the same language.
"""

from __future__ import annotations

from typing import Any


class GenqError(Exception):
    """Base class: ``code`` is stable, ``status`` is the HTTP status, ``detail`` is JSON."""

    code = "error"
    status = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.detail}


class UnknownFunction(GenqError):
    code = "unknown_function"
    status = 404


class InvalidInput(GenqError):
    """Input failed validation; ``errors`` lists ``{"field", "message", "type"}`` entries."""

    code = "invalid_input"
    status = 422


class TryLater(GenqError):
    """Refused for now (429): ``retry_after`` seconds, sent as the Retry-After header."""

    status = 429

    @property
    def retry_after(self) -> int:
        return int(self.detail.get("retry_after", 1))


class QueueFull(TryLater):
    code = "queue_full"


class RateLimited(TryLater):
    """The API key (or the client address, after wrong keys) is over its request rate."""

    code = "rate_limited"


class JobNotFound(GenqError):
    code = "job_not_found"
    status = 404


class IdempotencyConflict(GenqError):
    """The idempotency key was already used for a different function or input."""

    code = "idempotency_conflict"
    status = 409


class JobFailed(GenqError):
    """Raised by ``result()`` when the job failed; ``detail["error"]`` is the recorded error."""

    code = "job_failed"
    status = 409


class JobCancelled(GenqError):
    code = "job_cancelled"
    status = 409


class JobExpired(GenqError):
    code = "job_expired"
    status = 409


class ResultTimeout(GenqError, TimeoutError):
    """Waiting for a result took longer than the caller's ``timeout`` (the job goes on)."""

    code = "result_timeout"
    status = 408


class StoreLocked(GenqError):
    code = "store_locked"
    status = 503


class StoreUnavailable(GenqError):
    """The store (Redis) did not answer; nothing was accepted, so the call can be retried."""

    code = "store_unavailable"
    status = 503


class LeaseLost(GenqError):
    """A worker wrote to a job it no longer holds: its lease lapsed and the job was
    reclaimed (or finished). The write was refused; the job's log is unchanged."""

    code = "lease_lost"
    status = 409


class Cancelled(BaseException):
    """Raised inside sync job code (at Progress calls and generator yields) to stop it.

    A BaseException, like ``asyncio.CancelledError``, so that a user's ``except Exception``
    cannot swallow it and keep a cancelled job burning GPU time.
    """
