"""genq's own rules about a job's life, shared by every store backend.

A backend decides *how* a change is made atomically (a SQLite transaction, a Redis Lua
script); this module decides *what* the change is: the contents of each event, where a
job goes when its worker is lost, and that a requested cancellation beats a retry. Both
backends build their events here, so a client sees the same log on either store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genq.errors import LeaseLost, OwnerQuota, UnknownTicket
from genq.models import EventType, Job, JobStatus, Lease, result_size
from genq.store.base import NewEvent, SubmitPolicy

EXPIRED_REASON = "queue timeout: the job waited longer than its function allows"
CANCELLED_REASON = "cancelled"
CANCELLED_BY_REQUEST = "cancelled by request"
WORKER_LOST = "worker lost"
LEASE_LAPSED = "worker lost: its lease lapsed without renewal"
CANCELLED_WORKER_GONE = "cancelled; its worker stopped before finishing"


def owner_quota_refusal(owner: str, queued: int, policy: SubmitPolicy) -> OwnerQuota:
    """A submission refused because ``owner`` holds ``queued`` jobs, at or over the
    ``max_queued`` of its key."""
    return OwnerQuota(
        f"owner {owner} has {queued} queued jobs, the limit of its key's max_queued "
        f"({policy.owner_max_queued}); retry once some have started",
        owner=owner, quota="max_queued", limit=policy.owner_max_queued, queued=queued,
        retry_after=policy.retry_after)


def queued_event(position: int) -> NewEvent:
    return EventType.QUEUED, {"position": position}


def started_event(job: Job) -> NewEvent:
    """``job`` as just claimed (attempts already counted, so ``attempt`` is this run's
    number from 1, as ``JobInfo.attempts`` says while it runs). The Redis claim script
    builds the same object in Lua (store/redis_lua.py); the contract suite checks both."""
    return EventType.STARTED, {"attempt": job.attempts, "max_attempts": job.max_attempts,
                               "worker": job.worker_id}


def retrying_event(job: Job, delay: float, error: dict[str, Any]) -> NewEvent:
    """A failed attempt goes back to the queue after ``delay`` seconds. ``job`` is still
    as it ran: ``attempt`` names the failed run (from 1), ``next_attempt`` the next."""
    return EventType.RETRYING, {"attempt": job.attempts, "next_attempt": job.attempts + 1,
                                "delay": round(delay, 3), "error": error, "counted": True}


def requeued_event(attempt: int, reason: str, *, counted: bool) -> NewEvent:
    """Back to the queue at once, for ``reason``. ``attempt`` names the run that did not
    finish (from 1, the number its ``started`` event gave). ``counted``: whether that run
    used up an attempt: a lost worker's did (``next_attempt`` is one more), a graceful
    shutdown's did not (the next run has the same number; docs/reliability.md)."""
    return EventType.RETRYING, {"reason": reason, "attempt": attempt,
                                "next_attempt": attempt + 1 if counted else attempt,
                                "delay": 0.0, "counted": counted}


def terminal_event(status: JobStatus, *, result: Any = None,
                   error: dict[str, Any] | None = None,
                   data: dict[str, Any] | None = None) -> NewEvent:
    if not status.terminal:
        raise ValueError(f"{status} is not a terminal status")
    payload = dict(data or {})
    if status is JobStatus.SUCCEEDED:
        payload.update(result_entry(result))
    elif error is not None:
        payload["error"] = error
    return EventType(status.value), payload


def result_entry(result: Any) -> dict[str, Any]:
    """A result as the ``succeeded`` event holds it: inline when small, else only its
    size (a log replay must not carry a large result: the API serves it in pages)."""
    size = result_size(result)
    return {"result": result} if size is None else {"result": None, "result_size": size}


def cached_event(result: Any, cached_from: str) -> NewEvent:
    return EventType.SUCCEEDED, {**result_entry(result), "cached_from": cached_from}


def expired_event() -> NewEvent:
    return terminal_event(JobStatus.EXPIRED, data={"reason": EXPIRED_REASON})


def cancelled_event(reason: str = CANCELLED_REASON) -> NewEvent:
    """Also what ``retry`` and ``requeue`` log instead when cancellation was requested:
    a job the user asked to stop must never run again."""
    return terminal_event(JobStatus.CANCELLED, data={"reason": reason})


def lease_lost(job_id: str, lease: Lease) -> LeaseLost:
    """The answer to a write under a lease that no longer holds the job (fencing)."""
    return LeaseLost(f"job {job_id} is no longer held by worker {lease.worker_id} "
                     f"(lease token {lease.token})", job_id=job_id, worker=lease.worker_id)


def unknown_ticket(job_id: str) -> UnknownTicket:
    """The answer to a cancel naming a ticket that no submission of the job was given."""
    return UnknownTicket(f"job {job_id} has no such ticket: a ticket is what a submission "
                         "of this job answered; cancel without one to cancel the job",
                         job_id=job_id)


def queue_timed_out(job: Job, now: float) -> bool:
    """Past its queue timeout. Only a job that never started can expire: a retry, or a
    job re-queued by a shutdown or a crash, has already waited its turn."""
    return job.expires_at is not None and job.started_at is None and job.expires_at <= now


@dataclass(frozen=True, slots=True)
class Transition:
    """Where a running job goes when its run ends without its worker saying how."""

    status: JobStatus  # QUEUED (run again at once, the attempt counted) or terminal
    event: NewEvent
    error: dict[str, Any] | None = None


def orphan_transition(job: Job, reason: str = WORKER_LOST) -> Transition:
    """A running job whose worker is gone (its process died, or its lease lapsed):
    cancelled if that was asked for, else retried while attempts remain, else failed."""
    if job.cancel_requested:
        return Transition(JobStatus.CANCELLED, cancelled_event(CANCELLED_WORKER_GONE))
    if job.attempts < job.max_attempts:
        return Transition(JobStatus.QUEUED, requeued_event(job.attempts, reason, counted=True))
    error = {"type": "WorkerLost",
             "message": "the worker running this job stopped (crash, kill or a lapsed "
                        "lease) and the job has no retries left"}
    return Transition(JobStatus.FAILED, terminal_event(JobStatus.FAILED, error=error), error)
