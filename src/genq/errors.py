"""Errors a user of genq can cause or observe.

Every error carries a stable machine-readable ``code`` and the HTTP status the API
answers with, so the server, the clients and the CLI all speak the same language.

Every class that names its own ``code`` registers it in ``WIRE_ERRORS`` as it is
defined, and the clients turn an error answer back into its class through that one
table (``from_wire``). So an error that crosses the wire lives here, whoever raises it
(the API, the auth layer, a store, a client): a class defined elsewhere would be missing
from the table whenever its module happens not to be imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WIRE_ERRORS: dict[str, type[GenqError]] = {}  # code -> class; filled by GenqError subclasses


class GenqError(Exception):
    """Base class: ``code`` is stable, ``status`` is the HTTP status, ``detail`` is JSON."""

    code = "error"
    status = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            return  # an abstract grouping (TryLater) or a class that decodes others
        known = WIRE_ERRORS.get(cls.code)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"error code {cls.code!r} is already {known.__qualname__}'s")
        WIRE_ERRORS[cls.code] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.detail}


class PermanentError(Exception):
    """A job function's failure that running again cannot fix (a missing file, a refused
    credential, input the model rejects): the job fails at once, with no retry, even when
    the error is also one of the function's ``retry_on`` types.

    Raise it (``raise genq.PermanentError("no such model") from exc``), or make it a base
    of your own error class so the error keeps its type in the job's ``error``::

        class ModelMissing(LookupError, genq.PermanentError): ...

    Not a ``GenqError``: it never crosses the wire as itself; the job's ``error`` names
    the class raised (docs/api.md, "Retries")."""


class UnknownTicket(GenqError):
    """A cancel named a ticket the job never had (tickets: Store.cancel)."""

    code = "unknown_ticket"
    status = 404


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


class OwnerQuota(TryLater):
    """The owner has as many queued jobs as its key's ``max_queued`` allows (429):
    ``owner``, ``quota`` (``max_queued``), ``limit``, ``queued`` and ``retry_after``."""

    code = "owner_quota"


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


class NoResult(GenqError):
    """``GET /api/jobs/{id}/result/value`` of a job that has not succeeded (yet)."""

    code = "no_result"
    status = 409


class ResultTimeout(GenqError, TimeoutError):
    """Waiting for a result took longer than the caller's ``timeout`` (the job goes on)."""

    code = "result_timeout"
    status = 408


class StoreLocked(GenqError):
    code = "store_locked"
    status = 503


class StoreUnavailable(GenqError):
    """The store (Redis) did not answer; nothing was accepted, so the call can be retried,
    after ``retry_after`` seconds (sent as the Retry-After header)."""

    code = "store_unavailable"
    status = 503

    @property
    def retry_after(self) -> int:
        return int(self.detail.get("retry_after", 1))


class StorageFull(StoreUnavailable):
    """The disk under the SQLite store is full: nothing was accepted (``path`` names the
    database). It answers so until space is freed there; the next call after that
    succeeds, without a restart. A StoreUnavailable, so a worker's writes wait it out."""

    code = "storage_full"
    status = 507


class StoreLost(StoreUnavailable):
    """The SQLite store's file (``path``) was deleted or replaced under the running
    server: nothing more is accepted, since it would vanish at the next start. Restart
    ``genq serve`` to open whatever file is at that path now."""

    code = "store_lost"
    status = 503


class NotReady(GenqError):
    """``/readyz``: the store answers, but some function has no live worker ready to run
    it (its model is loading, its setup failed, or no worker serves it); ``functions``
    gives every function's state (genq.readiness)."""

    code = "not_ready"
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


class BadRequest(GenqError):
    """The request is malformed: not JSON, not of the documented shape, a bad query
    parameter (``field`` names it)."""

    code = "bad_request"
    status = 400


class PayloadTooLarge(GenqError):
    """The request body is larger than the server's limit (``limit`` bytes)."""

    code = "payload_too_large"
    status = 413


class ArtifactTooLarge(GenqError):
    """A binary result or output chunk is larger than the store accepts (``limit``)."""

    code = "artifact_too_large"
    status = 413


class OutputTooLarge(GenqError):
    """A job's output chunk or its whole output is over its function's limit
    (``limit``: ``max_chunk_bytes`` or ``max_output_bytes``); the job fails with it."""

    code = "output_too_large"
    status = 413


class Unauthorized(GenqError):
    """The API key is missing or not valid."""

    code = "unauthorized"
    status = 401


class Forbidden(GenqError):
    """The API key is valid but may not do this (cluster-wide data needs an admin key)."""

    code = "forbidden"
    status = 403


class HostNotAllowed(GenqError):
    """The request's ``Host`` is not a name this server answers to: a DNS-rebinding page
    reaches a loopback server under its own host name (``--allowed-hosts`` adds one)."""

    code = "host_not_allowed"
    status = 403


class OriginNotAllowed(GenqError):
    """A state-changing request from a web page of another origin (cross-site request
    forgery); ``--allowed-origins`` lets a page's origin in."""

    code = "origin_not_allowed"
    status = 403


class RequestTimeout(GenqError):
    """The client did not send its whole request (headers, body) in time; the server
    closes the connection."""

    code = "request_timeout"
    status = 408


class TooManyConnections(TryLater):
    """The client's address holds as many open connections as the server allows one
    address (``--max-connections-per-client``); this one was closed."""

    code = "too_many_connections"


class ConnectionLost(GenqError):
    """The server could not be reached for longer than ``retry_for`` seconds."""

    code = "connection_lost"
    status = 503


class ProtocolError(GenqError):
    """A server's answer that a client cannot read: a success that is not JSON, JSON not
    of the documented shape, an event stream with a non-numeric id. Raised by the Python
    clients, naming the URL (``url``) and what was wrong. Not retried, since asking
    again would get the same answer: its status is outside the retried 502/503/504, so
    the event stream's retries pass it on too."""

    code = "protocol_error"
    status = 500


class RemoteError(GenqError):
    """An error the server answered that has no class here: a code of a newer server, or
    an answer that is not genq's JSON (a proxy's error page). ``code`` and ``status`` are
    the server's."""

    def __init__(self, message: str, *, code: str = GenqError.code,
                 status: int = GenqError.status, **detail: Any) -> None:
        super().__init__(message, **detail)
        self.code = code
        self.status = status


def from_wire(status: int, body: Mapping[str, Any]) -> GenqError:
    """The exception an error answer stands for: ``body`` is the JSON object under
    ``"error"`` (``code``, ``message``, details), ``status`` the HTTP status.

    A registered code gives its own class with the details as ``detail``; any other
    gives ``RemoteError`` carrying the code and the status."""
    detail = dict(body)
    code, message = str(detail.pop("code", "error")), str(detail.pop("message", ""))
    cls = WIRE_ERRORS.get(code)
    if cls is None:
        err = RemoteError(message, code=code, status=status)
        err.detail = detail  # as it came, even a detail named like a parameter
        return err
    return cls(message, **detail)
