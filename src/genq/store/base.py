"""The Store protocol: everything the worker, the clients and the server need from storage,
and ``StoreBase``, the little both backends share.

One protocol, one module per backend (``sqlite.py``, ``redis.py``), one shared test suite
(``tests/store_contract.py``) that every backend must pass, and one module of genq's own
rules (``rules.py``: event contents, lost workers, cancel beats retry) that both use. A
backend owns the atomicity of each call: submit's checks-then-insert, claim, cancel and
finish are each one step.

Fencing: ``claim`` hands the worker a job with a ``lease_token``; every write a worker
makes to that job (``append_events``, ``finish``, ``retry``, ``requeue``) carries its
``Lease`` and is refused with ``LeaseLost`` once the job was reclaimed or finished, so a
worker that was paused past its lease can never write over the job's next attempt.

``StoreBase`` holds only what the two backends do alike, whatever they store in: the
retention settings, the subscriber lists of ``subscribe_work`` / ``subscribe_cancels``
/ ``subscribe_jobs`` and their dispatch, ``async with store:``, and the sequence of
``housekeep`` (expire, reclaim, purge), each step the backend's own. Everything that
touches data stays in the backend: the two differ in every such call (a Lua script
against a mirror in memory), so a shared version would be a switch on the backend.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from genq.models import (
    ArtifactRef,
    Event,
    EventType,
    Job,
    JobStatus,
    Lease,
    LeaseReport,
    SubmitReason,
    WorkerInfo,
)
from genq.store.retention import RETAIN_BATCH
from genq.store.webhooks import WebhookStore

NewEvent = tuple[EventType, dict[str, Any]]
Unsubscribe = Callable[[], None]

# A page of a job's log ends with the event whose data reaches this many bytes (so it
# holds less than this plus one event, however large that one is): replays and result
# reads hold a page at a time, so their memory is bounded by it, not by the log's size.
PAGE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SubmitPolicy:
    """What ``create_job`` enforces atomically for one submission."""

    max_queue: int | None = None  # queued jobs of this function; None is unbounded
    cache_ttl: float | None = None  # reuse a succeeded job with the same cache key this recent
    dedupe: bool = False  # return the owner's queued/running job with the same cache key
    retry_after: int = 1  # seconds advertised by QueueFull and OwnerQuota
    # The owner's queued jobs (every function, ready or waiting for a retry) this many
    # or more: refused with OwnerQuota (its API key's max_queued; docs/sharing.md)
    owner_max_queued: int | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    """What one owner may hold (an API key's ``max_queued`` / ``max_running``, else the
    server's default). ``max_queued`` reaches the store in the ``SubmitPolicy``;
    ``max_running`` on the job (``Job.owner_max_running``), so any claim anywhere knows
    it without a configuration of its own."""

    max_queued: int | None = None
    max_running: int | None = None

    def over(self, default: Quota) -> Quota:
        """This quota, each limit it does not set taken from ``default``."""
        return Quota(default.max_queued if self.max_queued is None else self.max_queued,
                     default.max_running if self.max_running is None else self.max_running)


@dataclass(frozen=True, slots=True)
class Warmth:
    """What a claiming worker holds loaded, for warm routing (``Store.claim_many``).

    Among the first ``routing.WINDOW`` runnable jobs of a function at its highest
    waiting priority, in order, a claim takes the first job whose ``affinity`` is None or
    in ``holds``, or which has waited ``waits[function]`` seconds or more since it became
    runnable (the starvation bound: then the next free worker takes it, ahead of the
    warm jobs behind it); failing that, the first whose model no other live worker holds
    (someone must load it). Jobs whose model another worker holds, and which are younger
    than the bound, are left to that worker. A function not in ``waits``, or with a
    bound of 0, is claimed in plain order. Priority is never broken (a lower-priority
    job is not taken while a higher one waits for its warm worker), nor are
    ``max_running`` and leases. The rule: genq.store.routing."""

    holds: frozenset[str] = frozenset()  # affinity keys of the models this worker holds
    waits: Mapping[str, float] = field(default_factory=dict)  # function -> bound, seconds


@dataclass(frozen=True, slots=True)
class Submitted:
    job: Job
    created: bool  # False when an idempotency key, the cache or de-duplication answered
    reason: SubmitReason = SubmitReason.NEW
    # This submission's hold on ``job`` (Store.cancel's ``ticket``): the submitted job's
    # own ticket when it was created or cached, or joined a live job; the first
    # submission's when an idempotency key answered. None for a job from before tickets.
    ticket: str | None = None


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A finished job as the dashboard's figures need it: no input, no result."""

    owner: str
    function: str
    status: JobStatus
    created_at: float
    started_at: float | None
    finished_at: float


@dataclass(frozen=True, slots=True)
class FinishedStats:
    """What ``Store.finished_stats`` answers: read from the store, so every front end,
    and a restarted server, shows the same figures."""

    # (owner, function, status) -> jobs that ever reached that terminal status in this
    # store (counted as each one ends, so retention does not lower them)
    totals: dict[tuple[str, str, str], int]
    recent: list[FinishedJob]  # the latest finished jobs, newest first


class Store(Protocol):
    kind: str  # "sqlite" | "redis": for health checks and logs
    # Finished jobs older than this many seconds are deleted by ``housekeep``; None keeps
    # them forever (genq.store.retention). ``retain_batch``: jobs deleted per call.
    retain: float | None
    retain_batch: int

    async def open(self) -> None:
        """Connect, create the schema, and recover jobs left behind by a crash."""

    async def close(self) -> None:
        """Flush pending writes and release every resource."""

    def problem(self) -> str | None:
        """What keeps the store from taking work now, in a sentence for an operator (the
        readiness endpoint shows it), or None. Cheap and never waits: SQLite says "disk
        full since ..." (submissions answer 507 ``storage_full`` until space is freed,
        then it recovers by itself) or that its file was deleted or replaced (503
        ``store_lost`` until a restart). Redis answers None: an unreachable Redis shows
        as calls that fail (``StoreUnavailable``)."""

    async def __aenter__(self) -> Self:
        """``async with store:`` opens it, and closes it on the way out."""

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None: ...

    # -- submission and reads --------------------------------------------------------
    async def create_job(self, job: Job, policy: SubmitPolicy) -> Submitted:
        """Store ``job`` with its queued event, or answer from idempotency/cache/dedupe.

        A de-duplicated submission joins the live job: ``job.ticket`` becomes one more
        holder of it (``cancel``'s ``ticket``), counted in the store. Raises QueueFull or
        IdempotencyConflict. Durable when it returns (a join included).
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
        before_id: str | None = None,
    ) -> list[Job]:
        """Newest first: by ``created_at``, then ``id``, both descending. ``before``
        alone keeps jobs created strictly before it; with ``before_id``, jobs whose pair
        (created_at, id) is below (before, before_id): the next page after the job with
        that pair, none skipped or repeated when many share an instant (genq.paging)."""

    async def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run of its function; None when not queued."""

    async def queue_depth(self, function: str) -> int: ...

    # -- events ----------------------------------------------------------------------
    async def append_events(self, job_id: str, events: Sequence[NewEvent], lease: Lease) -> int:
        """Append to a running job's log in order; returns the last id assigned.
        Raises LeaseLost unless the job is running under ``lease``."""

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000,
                          max_bytes: int = PAGE_BYTES) -> list[Event]:
        """Events with id > ``after``, oldest first: at most ``limit``, ending with the
        event whose data reaches ``max_bytes`` (``Event.size``). A page shorter than
        ``limit`` is not the end of the log: read on after its last id."""

    def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """Batches of events after ``after`` as they are written; ends after the terminal one."""

    async def wait_terminal(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it is terminal; raises ResultTimeout or JobNotFound."""

    # -- the worker's side -----------------------------------------------------------
    async def claim(self, functions: Iterable[str], worker_id: str, lease: float,
                    limits: Mapping[str, int] | None = None,
                    warmth: Warmth | None = None) -> Job | None:
        """Take the next runnable job (highest priority, then oldest) and log ``started``.

        The job comes with a new ``lease_token``. ``limits`` caps how many jobs of a
        function run at once across every worker of the store (its ``max_running``).
        ``warmth``: prefer jobs whose model this worker holds (``Warmth``)."""

    async def claim_many(self, wants: Mapping[str, int], worker_id: str, lease: float,
                         limits: Mapping[str, int] | None = None,
                         warmth: Warmth | None = None) -> list[Job]:
        """Up to ``wants[f]`` jobs of each function f, in the order ``claim`` would take
        them one by one, in one step (one round trip for a worker with many free slots)."""

    def subscribe_work(self, callback: Callable[[], None]) -> Unsubscribe:
        """Call ``callback`` (on the store's loop) whenever a job may have become claimable."""

    def subscribe_cancels(self, callback: Callable[[str], None]) -> Unsubscribe:
        """Call ``callback(job_id)`` when cancellation of a running job is requested."""

    def subscribe_jobs(self, callback: Callable[[Job], None]) -> Unsubscribe:
        """Call ``callback(job)`` after each durable change of a job's status (queued,
        started, retrying, terminal): the feed of dashboards. Not called per output chunk."""

    async def extend_leases(self, worker_id: str, leases: Mapping[str, int],
                            lease: float) -> LeaseReport:
        """Renew the leases of running jobs (job id -> lease token) for ``lease`` seconds.

        The answer names the jobs the worker must stop: those whose cancellation was
        requested (the fallback when a cancel notification was missed) and those it no
        longer holds."""

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> Job:
        """Record the terminal state and terminal event. Durable when it returns.

        A job already terminal is returned as it is. With ``lease``, raises LeaseLost if
        the job is running under another lease; without, the end is administrative."""

    async def retry(self, job_id: str, delay: float, error: dict[str, Any],
                    lease: Lease) -> Job:
        """Back to the queue after ``delay`` seconds, logging ``retrying``; or cancelled,
        if cancellation was requested meanwhile (a cancel beats a retry)."""

    async def requeue(self, job_id: str, reason: str, lease: Lease) -> Job:
        """Back to the queue at once without using up an attempt (worker shutdown); or
        cancelled, if cancellation was requested meanwhile."""

    async def cancel(self, job_id: str, reason: str = "cancelled by request", *,
                     ticket: str | None = None) -> Job:
        """Cancel a queued job at once; ask the worker to stop a running one.

        With ``ticket`` (a submission's, ``Submitted.ticket``) only that submission lets
        go: the job is cancelled when no submission holds it any more, else it goes on
        for the others. A ticket already let go changes nothing (a retried call); one
        the job never had raises UnknownTicket. Atomic: of two last holders cancelling
        at once, exactly one cancels the job. Without a ticket, the job is cancelled
        whoever holds it (the job page's Cancel, an admin)."""

    async def housekeep(self, now: float) -> None:
        """Expire queued jobs past their queue timeout; reclaim running jobs whose lease
        lapsed (rules.orphan_transition), bumping their lease token; delete up to
        ``retain_batch`` finished jobs that ended before ``now - retain``."""

    async def purge_finished(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished jobs (never queued or running ones) whose
        ``finished_at`` is before ``before``, oldest first, with their events, artifacts
        and every index, cache and idempotency entry naming them. Returns how many were
        deleted; safe to run from several processes at once."""

    # -- the cluster -----------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo, ttl: float) -> None:
        """Report a live worker; it counts as gone ``ttl`` seconds after its last report."""

    async def unregister_worker(self, worker_id: str) -> None: ...

    async def workers(self) -> list[WorkerInfo]:
        """Every worker that reported within its ttl, on any machine."""

    async def running_counts(self) -> dict[str, int]:
        """Running jobs per function, across every worker."""

    async def finished_stats(self, since: float, limit: int) -> FinishedStats:
        """Every owner's totals of finished jobs per function and status (kept by the
        store as jobs end: a cache hit counts as succeeded), and the latest ``limit``
        jobs that finished at ``since`` or later. Its cost is bounded by ``limit`` and
        the number of (owner, function) pairs, not by the jobs stored."""

    # -- artifacts -------------------------------------------------------------------
    async def put_artifact(
        self, job_id: str, name: str, content_type: str, data: bytes
    ) -> ArtifactRef: ...

    # -- webhooks --------------------------------------------------------------------
    @property
    def webhooks(self) -> WebhookStore:
        """The jobs' webhook records and attempt logs (store/webhooks.py), kept in this
        store so pending deliveries outlive a restart; genq.webhooks sends them."""

    async def get_artifact(self, artifact_id: str) -> tuple[ArtifactRef, bytes] | None: ...


CallbackT = TypeVar("CallbackT", bound=Callable[..., None])  # one of the three kinds


class StoreBase(abc.ABC):
    """What both stores share: retention settings, subscribers, ``async with``, and the
    order of housekeeping. A backend supplies the steps; see the module docstring."""

    kind: str

    def __init__(self, *, retain: float | None) -> None:
        self.retain = retain
        self.retain_batch = RETAIN_BATCH
        self._work_callbacks: list[Callable[[], None]] = []
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self._job_callbacks: list[Callable[[Job], None]] = []

    # -- life cycle ------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def problem(self) -> str | None:
        """Store.problem: nothing known to be wrong, unless the backend says otherwise."""
        return None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- subscribers -----------------------------------------------------------------
    def subscribe_work(self, callback: Callable[[], None]) -> Unsubscribe:
        return self._add_subscriber("work", self._work_callbacks, callback)

    def subscribe_cancels(self, callback: Callable[[str], None]) -> Unsubscribe:
        return self._add_subscriber("cancel", self._cancel_callbacks, callback)

    def subscribe_jobs(self, callback: Callable[[Job], None]) -> Unsubscribe:
        return self._add_subscriber("jobs", self._job_callbacks, callback)

    def _add_subscriber(self, feed: str, callbacks: list[CallbackT],
                        callback: CallbackT) -> Unsubscribe:
        """Add ``callback`` to the subscribers of ``feed`` (``work``, ``cancel`` or
        ``jobs``); a store that hears of changes from elsewhere also starts listening."""
        callbacks.append(callback)
        return lambda: callbacks.remove(callback)

    def _notify_work(self) -> None:
        for callback in list(self._work_callbacks):
            callback()

    def _notify_cancel(self, job_id: str) -> None:
        for callback in list(self._cancel_callbacks):
            callback(job_id)

    def _notify_job(self, job: Job) -> None:
        for callback in list(self._job_callbacks):
            callback(job)

    # -- housekeeping ----------------------------------------------------------------
    async def housekeep(self, now: float) -> None:
        """Store.housekeep: the three steps, in this order."""
        await self._expire_queued(now)
        await self._reclaim_lapsed(now)
        if self.retain is not None:
            await self.purge_finished(now - self.retain, self.retain_batch)

    @abc.abstractmethod
    async def _expire_queued(self, now: float) -> None:
        """End queued, never-started jobs past their queue timeout (rules.queue_timed_out)."""

    @abc.abstractmethod
    async def _reclaim_lapsed(self, now: float) -> None:
        """Reclaim running jobs whose lease lapsed by ``now`` (rules.orphan_transition),
        bumping their lease token."""

    @abc.abstractmethod
    async def purge_finished(self, before: float, limit: int) -> int: ...
