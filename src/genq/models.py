"""Plain data shared by every layer: job status, jobs, events, artifacts."""

from __future__ import annotations

import operator
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from genq.jsoncodec import compact_json

# A result whose JSON is larger than this is not inlined in job views or in the
# ``succeeded`` event: they give its size, and the result is read in pages from
# ``GET /api/jobs/{id}/result/value`` (what the clients' ``result()`` do).
INLINE_RESULT_BYTES = 1 << 20

class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


class EventType(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    OUTPUT = "output"
    LOG = "log"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self.value in TERMINAL_STATUSES


def event_type(name: str) -> EventType | str:
    """The ``EventType`` named ``name``, or ``name`` itself for a type newer than this
    genq: a client passes such events through rather than failing on them."""
    try:
        return EventType(name)
    except ValueError:
        return name


class SubmitReason(StrEnum):
    """Why a submission answered with the job it did (the API's ``"submitted"``)."""

    NEW = "new"  # a job was created for it
    IDEMPOTENT = "idempotent"  # its Idempotency-Key named a job already submitted
    CACHED = "cached"  # a recent success with the same input answered it (a new job)
    DEDUPLICATED = "deduplicated"  # the owner's live job with the same input answers it
    EXISTING = "existing"  # no submission: a client's handle on a job by id


class _IdSource:
    """128-bit random ids from the OS, read 1,024 at a time: one getrandom() call per id
    cost ~40 µs on some VMs, a tenth of a no-op job's whole budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""

    def __call__(self) -> str:
        with self._lock:
            if not self._pool:
                self._pool = os.urandom(16 * 1024)
            chunk, self._pool = self._pool[:16], self._pool[16:]
        return chunk.hex()


new_job_id = _IdSource()


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may write to a running job: the worker that claimed it, with the fencing token
    of that claim. A worker whose lease lapsed (paused, partitioned) keeps its old token,
    and the store refuses its writes once the job was reclaimed, even by the same worker."""

    worker_id: str
    token: int


@dataclass(slots=True)
class Job:
    """One call of a registered function, from submission to its terminal state: the
    storage record, internal to the stores, the worker and the engine.

    It holds what only they may see (owner, lease, cache and idempotency keys); what a
    caller sees, through the API or a client, is its ``JobInfo``.
    """

    id: str
    function: str
    input: dict[str, Any]
    owner: str = "local"
    status: JobStatus = JobStatus.QUEUED
    priority: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    max_attempts: int = 1
    not_before: float = 0.0  # retries wait until this time before they can be claimed
    expires_at: float | None = None  # queue timeout: still queued after this -> expired
    result: Any = None
    error: dict[str, Any] | None = None
    cache_key: str | None = None
    idempotency_key: str | None = None
    worker_id: str | None = None
    lease_until: float | None = None
    lease_token: int = 0  # fencing token: bumped by every claim and every reclaim
    cancel_requested: bool = False
    last_event_id: int = 0
    # The model of a keyed family this job needs (``name:key``, genq.serving.model):
    # claims prefer workers that hold it (warm routing, Store.claim_many's ``warmth``).
    affinity: str | None = None
    # The owner's running quota when it was submitted (its API key's ``max_running``):
    # claims pass over the job while its owner runs that many jobs, cluster-wide.
    owner_max_running: int | None = None
    # The ticket of the submission that builds this job (JobService.submit): what the
    # submission answers, whether it creates the job or joins another (dedupe). As
    # stored, the ticket of the submission that created it (Store.cancel's ``ticket``).
    ticket: str | None = None

    def held_by(self, lease: Lease) -> bool:
        """Running under exactly this lease: the only state in which its worker may write."""
        return (self.status is JobStatus.RUNNING and self.worker_id == lease.worker_id
                and self.lease_token == lease.token)

    @property
    def lease(self) -> Lease:
        """The right to write to this job as claimed: its worker plus the claim's token."""
        if self.worker_id is None:
            raise ValueError(f"job {self.id} has no worker")
        return Lease(self.worker_id, self.lease_token)

    def copy(self) -> Job:
        """A shallow copy. Positional construction from one attrgetter costs a fifth of
        dataclasses.replace, and the store hands out several copies per job."""
        return Job(*_job_fields(self))


_job_fields = operator.attrgetter(*(f.name for f in fields(Job)))


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as its owner sees it: what the API's job view holds and what the clients'
    ``get``, ``cancel``, ``list_jobs`` and ``job.info()`` return, in-process or remote.

    ``to_dict`` is the JSON view (its keys, in this order, are the wire contract; see
    docs/api.md) and ``from_dict`` reads it back, so the server and the clients share one
    definition. ``queue_position`` (1 = next to run) is set while the job waits in line
    and whoever built the view looked it up; None otherwise. So is ``waiting``.
    """

    id: str
    function: str
    input: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = JobStatus.QUEUED
    priority: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    max_attempts: int = 1
    result: Any = None
    error: dict[str, Any] | None = None
    last_event_id: int = 0
    queue_position: int | None = None
    # Set when the result is too large to inline (``result`` is then None): its size in
    # bytes; the whole result is at ``result_url`` (``client.result()`` reads it there).
    result_size: int | None = None
    # Why a queued job is not running though it may be next in line: no worker is ready
    # for its function (genq.readiness): ``{"reason": loading|failed|no_worker,
    # "message", "since"}``. None otherwise, and when whoever built the view did not ask.
    waiting: dict[str, Any] | None = None
    # Set in a submission's answer only: this submission's own hold on the job. Cancel
    # with it to detach just this submission: a job that de-duplication shared between
    # submissions is cancelled once every one of them has (docs/api.md, "Dedupe").
    ticket: str | None = None

    @classmethod
    def from_job(cls, job: Job, queue_position: int | None = None,
                 waiting: dict[str, Any] | None = None,
                 ticket: str | None = None) -> JobInfo:
        size = result_size(job.result)
        return cls(job.id, job.function, job.input, job.status, job.priority, job.created_at,
                   job.started_at, job.finished_at, job.attempts, job.max_attempts,
                   job.result if size is None else None, job.error, job.last_event_id,
                   queue_position, size,
                   waiting if job.status is JobStatus.QUEUED else None, ticket)

    @property
    def result_url(self) -> str | None:
        """Where the API serves the whole result when it is not inlined."""
        return None if self.result_size is None else f"/api/jobs/{self.id}/result/value"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "function": self.function,
            "input": self.input,
            "status": self.status.value,
            "priority": self.priority,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "result": self.result,
            "result_size": self.result_size,
            "result_url": self.result_url,
            "error": self.error,
            "last_event_id": self.last_event_id,
            "queue_position": self.queue_position,
            "waiting": self.waiting,
            "ticket": self.ticket,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobInfo:
        """The view as JSON gives it; keys it does not know (``submitted``) are ignored."""
        return cls(
            id=data["id"], function=data["function"], input=data.get("input", {}),
            status=JobStatus(data["status"]), priority=data.get("priority", 0),
            created_at=data.get("created_at", 0.0), started_at=data.get("started_at"),
            finished_at=data.get("finished_at"), attempts=data.get("attempts", 0),
            max_attempts=data.get("max_attempts", 1), result=data.get("result"),
            error=data.get("error"), last_event_id=data.get("last_event_id", 0),
            queue_position=data.get("queue_position"), result_size=data.get("result_size"),
            waiting=data.get("waiting"), ticket=data.get("ticket"),
        )


@dataclass(slots=True, frozen=True)
class Event:
    """One entry of a job's append-only log. ``id`` increases by one per job from 1.

    ``type`` is a plain ``str`` for an event type newer than this genq (a client talking
    to a newer server); such an event is never terminal."""

    job_id: str
    id: int
    type: EventType | str
    data: dict[str, Any]
    ts: float
    # Bytes of ``data`` as stored (its JSON), when read from a store; 0 when not known.
    # Buffers and pages of events are bounded by it as well as by their count.
    size: int = field(default=0, compare=False)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "id": self.id, "type": str(self.type),
                "data": self.data, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class LeaseReport:
    """The store's answer to a lease renewal: what the worker must stop."""

    cancelled: frozenset[str] = frozenset()  # still ours, but cancellation was requested
    lost: frozenset[str] = frozenset()  # no longer ours: reclaimed, finished or unknown


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as it last reported itself to the store (the cluster view)."""

    id: str
    host: str
    pid: int
    functions: tuple[str, ...]
    concurrency: int  # job slots over all its functions
    running: int
    started_at: float
    seen_at: float
    device: str = "cpu"  # the replica's device (genq worker --devices)
    # function -> {"state": loading|ready|failed, "since", "models": [per model: state,
    # attempts, error, retry_at, load_seconds]} (genq.serving.host); a worker claims a
    # function's jobs only while it is ready.
    states: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The models it holds loaded: name, key, label, load_seconds, loaded_at.
    models: tuple[Mapping[str, Any], ...] = ()
    holds: frozenset[str] = frozenset()  # affinity keys of its keyed models (routing)

    def state_of(self, function: str) -> str:
        """``ready``, ``loading`` or ``failed``; a worker from before models: ready."""
        return str(self.states.get(function, {}).get("state", "ready"))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "pid": self.pid,
                "functions": list(self.functions), "concurrency": self.concurrency,
                "running": self.running, "started_at": self.started_at,
                "seen_at": self.seen_at, "device": self.device,
                "states": {k: dict(v) for k, v in self.states.items()},
                "models": [dict(m) for m in self.models], "holds": sorted(self.holds)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerInfo:
        return cls(str(d["id"]), str(d["host"]), int(d["pid"]), tuple(d["functions"]),
                   int(d["concurrency"]), int(d["running"]), float(d["started_at"]),
                   float(d["seen_at"]), str(d.get("device", "cpu")),
                   dict(d.get("states", {})), tuple(d.get("models", ())),
                   frozenset(d.get("holds", ())))


@dataclass(slots=True, frozen=True)
class ArtifactRef:
    """A stored binary result or output chunk (an image, a file), referenced from JSON."""

    id: str
    job_id: str
    name: str
    content_type: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": {"id": self.id, "job_id": self.job_id, "name": self.name,
                             "content_type": self.content_type, "size": self.size}}

    @classmethod
    def from_dict(cls, value: Any) -> ArtifactRef | None:
        """The reference inside a JSON result, or None when ``value`` is not one."""
        if isinstance(value, dict) and set(value) == {"artifact"}:
            a = value["artifact"]
            if isinstance(a, dict) and {"id", "job_id", "content_type"} <= set(a):
                return cls(str(a["id"]), str(a["job_id"]), str(a.get("name", a["id"])),
                           str(a["content_type"]),
                           int(a.get("size", 0)))
        return None


@dataclass(frozen=True, slots=True)
class OutputRef:
    """The result of a streamed job whose output was too large to copy into a result:
    the output chunks of one attempt, read back from the job's log when asked for.

    ``job_id``'s log, after event ``after`` (the ``started`` event of the attempt that
    succeeded), holds ``chunks`` output events of ``size`` bytes in all; the result is
    their text joined when ``text``, else the list of chunks, as a small output's would
    be. A cache hit copies the reference, so it reads the original job's log.
    """

    job_id: str
    after: int
    size: int
    chunks: int
    text: bool

    def to_dict(self) -> dict[str, Any]:
        return {"output_ref": asdict(self)}

    @classmethod
    def from_dict(cls, value: Any) -> OutputRef | None:
        """The reference a stored result is, or None when ``value`` is not one."""
        if isinstance(value, dict) and len(value) == 1 and "output_ref" in value:
            r = value["output_ref"]
            if isinstance(r, dict) and {"job_id", "after", "size", "chunks", "text"} <= set(r):
                return cls(str(r["job_id"]), int(r["after"]), int(r["size"]),
                           int(r["chunks"]), bool(r["text"]))
        return None


_FLOAT_JSON_MAX = 25  # bytes: the longest float repr (-2.2250738585072014e-308) and a comma


def json_size_bound(value: Any) -> int | None:
    """An upper bound of ``value``'s JSON size in bytes found without encoding it, for
    the common large results (text, a vector of floats such as an embedding), or None:
    size checks on every job's result then cost no encoding of it."""
    if value is None or isinstance(value, bool | float):
        return 24
    if isinstance(value, str):
        return len(value) * 6 + 2  # JSON escapes a character in at most 6 bytes
    if isinstance(value, list) and all(type(v) is float for v in value):
        return len(value) * _FLOAT_JSON_MAX + 2
    return None


def result_size(result: Any) -> int | None:
    """None when ``result`` is small enough to inline (INLINE_RESULT_BYTES of JSON), else
    its size in bytes (an OutputRef's: the bytes of its output)."""
    if isinstance(result, int):
        return None
    bound = json_size_bound(result)
    if bound is not None and bound <= INLINE_RESULT_BYTES:
        return None
    ref = OutputRef.from_dict(result)
    if ref is not None:
        return ref.size
    size = len(compact_json(result))  # ASCII: escapes make every character one byte
    return size if size > INLINE_RESULT_BYTES else None
