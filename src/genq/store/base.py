"""The Store protocol: everything the worker, the clients and the server need from storage.

One protocol, one module per backend (SQLite now, Redis later), one shared test suite
(``tests/store_contract.py``) that every backend must pass. A backend owns the atomicity
of each call: submit's checks-then-insert, claim, cancel and finish are each one step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from genq.models import ArtifactRef, Event, EventType, Job, JobStatus

NewEvent = tuple[EventType, dict[str, Any]]
Unsubscribe = Callable[[], None]


@dataclass(frozen=True, slots=True)
class SubmitPolicy:
    """What ``create_job`` enforces atomically for one submission."""

    max_queue: int | None = None  # queued jobs of this function; None is unbounded
    cache_ttl: float | None = None  # reuse a succeeded job with the same cache key this recent
    dedupe: bool = False  # return the owner's queued/running job with the same cache key
    retry_after: int = 1  # seconds advertised by QueueFull


@dataclass(frozen=True, slots=True)
class Submitted:
    job: Job
    created: bool  # False when an idempotency key, the cache or de-duplication answered
    reason: str = "new"  # "new" | "idempotent" | "cached" | "deduplicated"


class Store(Protocol):
    async def open(self) -> None:
        """Connect, create the schema, and recover jobs left behind by a crash."""

    async def close(self) -> None:
        """Flush pending writes and release every resource."""

    # -- submission and reads --------------------------------------------------------
    async def create_job(self, job: Job, policy: SubmitPolicy) -> Submitted:
        """Store ``job`` with its queued event, or answer from idempotency/cache/dedupe.

        Raises QueueFull or IdempotencyConflict. Durable when it returns.
        """

    async def get_job(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self,
        *,
        owner: str | None = None,
        function: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[Job]:
        """Newest first; ``before`` pages on ``created_at``."""

    async def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run of its function; None when not queued."""

    async def queue_depth(self, function: str) -> int: ...

    # -- events ----------------------------------------------------------------------
    async def append_events(self, job_id: str, events: Sequence[NewEvent]) -> int:
        """Append to a running job's log in order; returns the last id assigned."""

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        """Events with id > ``after``, oldest first."""

    def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """Batches of events after ``after`` as they are written; ends after the terminal one."""

    async def wait_terminal(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it is terminal; raises ResultTimeout or JobNotFound."""

    # -- the worker's side -----------------------------------------------------------
    async def claim(self, functions: Iterable[str], worker_id: str, lease: float) -> Job | None:
        """Take the next runnable job (highest priority, then oldest) and log ``started``."""

    def subscribe_work(self, callback: Callable[[], None]) -> Unsubscribe:
        """Call ``callback`` (on the store's loop) whenever a job may have become claimable."""

    def subscribe_cancels(self, callback: Callable[[str], None]) -> Unsubscribe:
        """Call ``callback(job_id)`` when cancellation of a running job is requested."""

    def subscribe_jobs(self, callback: Callable[[Job], None]) -> Unsubscribe:
        """Call ``callback(job)`` after each durable change of a job's status (queued,
        started, retrying, terminal): the feed of dashboards. Not called per output chunk."""

    async def extend_leases(self, worker_id: str, job_ids: Iterable[str], lease: float) -> None: ...

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> Job:
        """Record the terminal state and terminal event. Durable when it returns."""

    async def retry(self, job_id: str, delay: float, error: dict[str, Any]) -> Job:
        """Back to the queue after ``delay`` seconds, logging ``retrying``."""

    async def requeue(self, job_id: str, reason: str) -> Job:
        """Back to the queue at once without using up an attempt (worker shutdown)."""

    async def cancel(self, job_id: str, reason: str = "cancelled by request") -> Job:
        """Cancel a queued job at once; ask the worker to stop a running one."""

    async def housekeep(self, now: float) -> None:
        """Expire queued jobs past their queue timeout; reclaim jobs whose lease lapsed."""

    # -- artifacts -------------------------------------------------------------------
    async def put_artifact(
        self, job_id: str, name: str, content_type: str, data: bytes
    ) -> ArtifactRef: ...

    async def get_artifact(self, artifact_id: str) -> tuple[ArtifactRef, bytes] | None: ...
