"""The seam under every client: a ``Transport`` reaches the jobs, the client does the rest.

``genq.AsyncClient`` (and its blocking twin ``genq.Client``) build everything a caller
uses (handles, results, streams, ``map``, artifacts fetched and decoded) on the ten
calls below, like httpx's ``AsyncClient(transport=...)``. Two transports ship:

* ``genq.client.http.HttpTransport``: a genq server, with streams that resume,
  retries and pooled connections; what ``genq.AsyncClient(url)`` makes.
* ``genq.local.LocalTransport``: the job service of an engine in this process; what
  ``app.local()`` gives its clients.

A transport acts for one owner, bound when it is made (the owner of the API key, or
app.local()'s ``owner``): another owner's job does not exist for it (JobNotFound). Its
methods are the engine's ``JobService`` with that owner bound, and they raise the
errors of genq.errors, whatever the transport, so code moves between in-process and
remote use unchanged. Anything with these methods is a transport (a test double, one
that records calls): ``genq.AsyncClient(my_transport)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from genq.models import Event, JobInfo, JobStatus, SubmitReason
from genq.paging import Before


class Transport(Protocol):
    async def submit(self, function: str, inputs: dict[str, Any], *,
                     priority: int | None = None, idempotency_key: str | None = None,
                     webhook: str | None = None, webhook_events: Sequence[str] | None = None
                     ) -> tuple[JobInfo, SubmitReason]:
        """Queue a call; raises UnknownFunction, InvalidInput, QueueFull,
        IdempotencyConflict. An idempotency key already used answers its job.
        ``webhook``: a URL the server posts the job's events to (``webhook_events``:
        started, progress, output; completed always), BadRequest if it cannot.
        The JobInfo carries this submission's ``ticket``."""
        ...

    async def get(self, job_id: str) -> JobInfo:
        """The job's current state; raises JobNotFound."""
        ...

    async def list_jobs(self, *, function: str | None = None,
                        status: str | JobStatus | None = None, limit: int = 50,
                        before: Before = None) -> list[JobInfo]:
        """The owner's jobs, newest first; ``before`` pages (genq.paging)."""
        ...

    def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """The job's events after ``after``, live, in batches, ending after the terminal
        one: each exactly once, in order. Batches let the blocking client cross threads
        once per batch rather than once per event."""
        ...

    async def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """The job once terminal; raises ResultTimeout after ``timeout`` seconds."""
        ...

    async def result(self, job_id: str) -> Any:
        """The whole result of a succeeded job, for one too large for its JobInfo
        (``result_size`` set); raises NoResult if it has not succeeded."""
        ...

    async def cancel(self, job_id: str, *, ticket: str | None = None) -> JobInfo:
        """Cancel a queued job, or ask a running one to stop. With ``ticket`` (a
        submission's, ``JobInfo.ticket`` of its answer), only that submission lets go:
        the job is cancelled once no submission holds it; raises UnknownTicket for a
        ticket the job never had."""
        ...

    async def artifact(self, artifact_id: str) -> bytes:
        """The bytes of a binary result or output chunk; raises JobNotFound."""
        ...

    async def functions(self) -> list[dict[str, Any]]:
        """The registered functions as GET /api/functions lists them (name, kind,
        streams, input_schema, options)."""
        ...

    async def aclose(self) -> None:
        """Release what the transport holds (connections); the jobs are not affected."""
        ...
