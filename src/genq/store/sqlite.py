"""The embedded store: one SQLite file in WAL mode, owned by one process.

Shape, and why:

* **Write-behind with group commit.** Every change is an op handed to one writer
  thread (``sqlite_writer.py``), which drains whatever has accumulated and commits it in
  a single transaction. Thousands of submissions or output chunks share one commit, so
  durability costs one fsync-free WAL append per batch instead of one per row, and the
  event loop never waits on disk. Calls that promise durability (submit, finish, cancel)
  await their op's commit.
* **Live jobs in memory.** Queued and running jobs are mirrored in memory, the queued
  ones in ``sqlite_queues.py`` (a sorted ready list per function: claim order, an index
  in it is a queue position, O(log n); heaps of delayed retries and queue timeouts), so
  claims, positions and limits are answered without a query. The file is the truth at
  start-up: ``open`` rebuilds the mirror and recovers jobs that were running when the
  previous process died.
* **One owner process.** An exclusive lock file refuses a second process, since two
  mirrors of one file would diverge. Several machines (or processes) share work through
  the Redis store instead.
* **Followers from memory.** Each commit's events go to the live followers of their job
  in this process from memory (``sqlite_feed.py``); a follower reads the file only to
  catch up.
* Reads of history (events, finished jobs) run on the loop's thread against a second,
  read-only connection: they are indexed and bounded (``limit``, and pages of events by
  bytes too: ``PAGE_BYTES``), cheaper than a thread hop, and WAL readers never wait on
  the writer.
* **A refused write leaves no trace.** A durable write (submit, finish, retry, requeue,
  cancel, expiry, reclaim) changes memory first so that the next call sees it, and
  carries an ``undo`` that puts memory back if the commit fails; meanwhile no claim
  takes the job and no other durable write touches it (``_unsettled``). Events taken
  without waiting (appends, ``started``) that a full disk refused are held, in order,
  and written before anything else once space returns (``sqlite_health.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import itertools
import json
import logging
import os
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genq.errors import (
    IdempotencyConflict,
    JobNotFound,
    QueueFull,
    ResultTimeout,
    StoreLocked,
    StoreUnavailable,
)
from genq.jsoncodec import compact_json
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
from genq.store import routing, rules, urls
from genq.store.base import (
    PAGE_BYTES,
    FinishedJob,
    FinishedStats,
    NewEvent,
    StoreBase,
    SubmitPolicy,
    Submitted,
    Warmth,
)
from genq.store.retention import DEFAULT_RETAIN
from genq.store.sqlite_feed import FOLLOW_BUFFER, FOLLOW_BUFFER_BYTES, FeedHub
from genq.store.sqlite_health import SUBMIT_CHECK_INTERVAL, FileHealth
from genq.store.sqlite_queues import JOB_ID, JobQueues, ReadyEntry
from genq.store.sqlite_webhooks import SCHEMA as WEBHOOKS_SCHEMA
from genq.store.sqlite_webhooks import SQLiteWebhooks
from genq.store.sqlite_writer import Op, Writer, halts
from genq.store.urls import UNSET, Unset

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    input TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    not_before REAL NOT NULL,
    expires_at REAL,
    result TEXT,
    error TEXT,
    cache_key TEXT,
    idempotency_key TEXT,
    worker_id TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER NOT NULL DEFAULT 0,
    affinity TEXT,
    owner_max_running INTEGER
);
DROP INDEX IF EXISTS jobs_by_status;  -- superseded by jobs_by_status_created_id
DROP INDEX IF EXISTS jobs_by_status_created;  -- superseded by jobs_by_status_created_id
CREATE INDEX IF NOT EXISTS jobs_by_status_created_id ON jobs(status, created_at, id);
-- Listing pages on (created_at, id): the id breaks ties between jobs of one instant.
DROP INDEX IF EXISTS jobs_by_created;  -- superseded by jobs_by_created_id
CREATE INDEX IF NOT EXISTS jobs_by_created_id ON jobs(created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_cache_key ON jobs(cache_key, finished_at)
    WHERE cache_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_idempotency_key ON jobs(owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Listing (always one owner's jobs from the API, newest first, optionally by function or
-- status) and retention (finished jobs by age) each read one index range, whatever the
-- table's size. CREATE ... IF NOT EXISTS also adds them to files made before them.
DROP INDEX IF EXISTS jobs_by_owner;  -- these three: superseded by the *_id ones below
DROP INDEX IF EXISTS jobs_by_owner_function;
DROP INDEX IF EXISTS jobs_by_owner_status;
CREATE INDEX IF NOT EXISTS jobs_by_owner_id ON jobs(owner, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_owner_function_id ON jobs(owner, function, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_owner_status_id ON jobs(owner, status, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_finished ON jobs(finished_at)
    WHERE finished_at IS NOT NULL;
-- Each submission's hold on a job (Store.cancel's ``ticket``): seq 0 for the one that
-- created it, then one per de-duplicated submission that joined it, in order.
CREATE TABLE IF NOT EXISTS job_tickets (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ticket TEXT NOT NULL,
    attached INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
-- Jobs that ever finished, per owner, function and terminal status: the dashboard's
-- totals, counted in the transaction that ends each job (Store.finished_stats).
CREATE TABLE IF NOT EXISTS finished_totals (
    owner TEXT NOT NULL,
    function TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (owner, function, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_job ON artifacts(job_id);
-- One row, rewritten once a second while the disk is full: space is back once it commits.
CREATE TABLE IF NOT EXISTS space_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""

_JOB_COLUMNS = (
    "id, function, owner, status, priority, input, created_at, started_at, finished_at, "
    "attempts, max_attempts, not_before, expires_at, result, error, cache_key, "
    "idempotency_key, worker_id, lease_until, cancel_requested, lease_token, affinity, "
    "owner_max_running"
)
_COUNT_FINISHED = ("INSERT INTO finished_totals (owner, function, status, n) VALUES (?, ?, ?, 1) "
                   "ON CONFLICT (owner, function, status) DO UPDATE SET n = n + 1")
_INSERT_TICKET = "INSERT INTO job_tickets (job_id, seq, ticket, attached) VALUES (?, ?, ?, 1)"
_DETACH_TICKET = "UPDATE job_tickets SET attached=0 WHERE job_id=? AND seq=?"
_INSERT_JOB = f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 23)})"
_UPDATE_JOB = (
    "UPDATE jobs SET status=?, started_at=?, finished_at=?, attempts=?, not_before=?, "
    "result=?, error=?, worker_id=?, lease_until=?, cancel_requested=?, lease_token=? "
    "WHERE id=?"
)
_INSERT_EVENT = "INSERT INTO events (job_id, id, type, ts, data) VALUES (?, ?, ?, ?, ?)"

_STATUS_EVENTS = frozenset({EventType.QUEUED, EventType.STARTED, EventType.RETRYING,
                            EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED,
                            EventType.EXPIRED})
_CATCH_UP = 1_000  # events per read of a follower catching up from the file
# Events held in memory while the disk is full, at most (their JSON); past it appends
# raise StorageFull, and the worker's JobLog keeps the rest.
MAX_HELD_BYTES = 16 << 20
PROBE_INTERVAL = 1.0  # seconds between writes that test for space, at most
_PROBE = "INSERT OR REPLACE INTO space_probe (id, at) VALUES (1, ?)"
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


log = logging.getLogger("genq.store")

_EVENT_TYPES = {t.value: t for t in EventType}
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in JobStatus if s.terminal)


def _dumps(value: Any) -> str:
    return "null" if value is None else compact_json(value)


def _job_params(job: Job) -> tuple[Any, ...]:
    return (
        job.id, job.function, job.owner, job.status.value, job.priority, _dumps(job.input),
        job.created_at, job.started_at, job.finished_at, job.attempts, job.max_attempts,
        job.not_before, job.expires_at, _dumps(job.result),
        None if job.error is None else _dumps(job.error), job.cache_key, job.idempotency_key,
        job.worker_id, job.lease_until, int(job.cancel_requested), job.lease_token,
        job.affinity, job.owner_max_running,
    )


def _update_params(job: Job) -> tuple[Any, ...]:
    return (
        job.status.value, job.started_at, job.finished_at, job.attempts, job.not_before,
        _dumps(job.result), None if job.error is None else _dumps(job.error), job.worker_id,
        job.lease_until, int(job.cancel_requested), job.lease_token, job.id,
    )


def _events_from_rows(job_id: str, rows: Sequence[tuple[Any, ...]]) -> list[Event]:
    """Events from ``(id, type, ts, data)`` rows, ``data`` as the JSON text written."""
    # One json.loads for the page rather than one per row: each ``data`` is a JSON text
    # written by _dumps, so joined with commas inside brackets they are an array.
    datas = json.loads(f"[{','.join(row[3] for row in rows)}]")
    # The JSON is ASCII (escaped), so its length in characters is its size in bytes.
    return [Event(job_id, id_, _EVENT_TYPES.get(t) or EventType(t), data, ts, len(text))
            for (id_, t, ts, text), data in zip(rows, datas, strict=True)]


def _row_to_job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    (id_, function, owner, status, priority, input_, created_at, started_at, finished_at,
     attempts, max_attempts, not_before, expires_at, result, error, cache_key,
     idempotency_key, worker_id, lease_until, cancel_requested, lease_token, affinity,
     owner_max_running) = row
    return Job(
        id=id_, function=function, input=json.loads(input_), owner=owner,
        status=JobStatus(status), priority=priority, created_at=created_at,
        started_at=started_at, finished_at=finished_at, attempts=attempts,
        max_attempts=max_attempts, not_before=not_before, expires_at=expires_at,
        result=None if result is None else json.loads(result),
        error=None if error is None else json.loads(error), cache_key=cache_key,
        idempotency_key=idempotency_key, worker_id=worker_id, lease_until=lease_until,
        cancel_requested=bool(cancel_requested), lease_token=lease_token, affinity=affinity,
        owner_max_running=owner_max_running,
    )


@dataclass(slots=True)
class _JobOp(Op):
    """A write of the store, with what ``_on_committed`` does once it is durable."""

    job_id: str | None = None  # whose followers get ``rows`` once committed
    terminal: Job | None = None  # the job became terminal with this op
    announce: Job | None = None  # the job's status changed with this op
    rows: list[tuple[str, int, str, float, str]] | None = None  # the job's new events
    seq: int = 0  # submission order, kept when the op is held and written again
    undo: Callable[[], None] | None = None  # puts memory back if the commit fails
    settles: str | None = None  # the job that claims and durable writes wait for

    def held_bytes(self) -> int:
        return sum(len(row[4]) for row in self.rows or ())


def lock_owner(path: str | os.PathLike[str]) -> str | None:
    """The pid of the process that holds the SQLite store at ``path`` open, or None when
    none does: what ``genq serve`` checks before starting, so that a second server on
    the same file says so in one line instead of failing in its start-up."""
    try:
        fd = os.open(f"{os.fspath(path)}.lock", os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_owner(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _lock_owner(fd: int) -> str:
    """The pid the owner wrote in its lock file."""
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


class SQLiteStore(StoreBase):
    """The default store: a durable SQLite file, for one process on one machine."""

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *,
                 retain: float | None = DEFAULT_RETAIN,
                 follow_buffer: int = FOLLOW_BUFFER,
                 follow_buffer_bytes: int = FOLLOW_BUFFER_BYTES,
                 max_held_bytes: int = MAX_HELD_BYTES, fair_share: bool = True) -> None:
        super().__init__(retain=retain)
        self.path = Path(path)
        self.max_held_bytes = max_held_bytes
        self._health = FileHealth(self.path)
        self._held: list[_JobOp] = []  # refused by a full disk, written once space returns
        self._held_bytes = 0
        self._seqs = itertools.count(1)  # gives each op its ``seq``
        # Job id -> a durable write in flight, and the future of whoever waits for it.
        self._unsettled: dict[str, asyncio.Future[None] | None] = {}
        self._probing: asyncio.Task[None] | None = None
        self._probed_at = -PROBE_INTERVAL  # time.monotonic() of the last probe begun
        self._purging = asyncio.Lock()  # two purges at once would pick the same rows
        self._lock_file: int | None = None
        self._reader: sqlite3.Connection | None = None
        self._writer: Writer[_JobOp] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: dict[str, Job] = {}
        # the queued ones among them (sqlite_queues.py), owners taking turns if fair_share
        self._queues = JobQueues(fair=fair_share)
        self._inflight: dict[tuple[str, str], str] = {}  # (owner, cache_key) -> live job id
        self._idempotent: dict[tuple[str, str], str] = {}  # (owner, key) -> live job id
        # live job id -> its tickets in join order (the creator's first) -> still held
        self._tickets: dict[str, dict[str, bool]] = {}
        # live followers, fed each commit's events
        self._feeds = FeedHub(follow_buffer, follow_buffer_bytes)
        self._terminal_waiters: dict[str, asyncio.Future[Job]] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}  # id -> (info, gone after)

    @classmethod
    def from_url(cls, url: str, *, retain: float | Unset | None = UNSET) -> SQLiteStore:
        """A store for ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (query
        parameters: ``retain``, ``fair_share``), or a plain path (``file://`` allowed).
        ``retain`` given here (``--retain``) overrides the URL's."""
        if urls.scheme(url) in ("", "file"):
            return cls(url.removeprefix("file://"), retain=urls.retain_option(url, {}, retain))
        if urls.scheme(url) != "sqlite":
            raise ValueError(f"{url!r} is not a SQLite URL: use sqlite:///path")
        query = urls.query_options(url)
        window = urls.retain_option(url, query, retain)
        fair = urls.option(url, query, "fair_share", urls.parse_flag, True)
        if unknown := sorted(set(query) - {"retain", "fair_share"}):
            raise ValueError(f"{url!r}: a SQLite URL takes only the parameters retain and "
                             f"fair_share, not {', '.join(unknown)}")
        path = url[len("sqlite://"):].split("?", 1)[0]
        if not path.startswith("/") or path == "/":
            raise ValueError(f"{url!r}: a SQLite URL is sqlite:///relative/path or "
                             "sqlite:////absolute/path")
        return cls(path[1:], retain=window, fair_share=fair)

    # -- life cycle ------------------------------------------------------------------
    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._purging = asyncio.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        setup = sqlite3.connect(self.path, isolation_level=None)
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            counted = setup.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                    "name='finished_totals'").fetchone() is not None
            setup.executescript(_SCHEMA)
            if not counted:  # a file from before the totals: count the jobs it holds
                setup.execute("INSERT INTO finished_totals (owner, function, status, n) "
                              "SELECT owner, function, status, count(*) FROM jobs WHERE "
                              f"status IN ({_TERMINAL_SQL}) GROUP BY owner, function, status")
            setup.executescript(WEBHOOKS_SCHEMA)
            columns = {row[1] for row in setup.execute("PRAGMA table_info(jobs)")}
            if "lease_token" not in columns:  # a file made before fencing existed
                setup.execute("ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL "
                              "DEFAULT 0")
            if "affinity" not in columns:  # a file made before warm routing existed
                setup.execute("ALTER TABLE jobs ADD COLUMN affinity TEXT")
            if "owner_max_running" not in columns:  # a file made before owner quotas
                setup.execute("ALTER TABLE jobs ADD COLUMN owner_max_running INTEGER")
        finally:
            setup.close()
        self._health.opened()
        self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._reader.execute("PRAGMA query_only=ON")
        self._writer = Writer(self.path, self._on_committed, self._loop)
        self._writer.start()
        await self._load_live_jobs()

    async def close(self) -> None:
        if self._probing is not None:
            await asyncio.gather(self._probing, return_exceptions=True)
        if self._writer is not None and self._held:
            await self._probe()  # the last chance for events held through a full disk
            if self._held:
                log.error("genq: %d events of running jobs could not be written to %s, "
                          "whose disk is still full; those jobs run again at the next start",
                          self._held_events(), self.path)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.stop)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for waiter in self._terminal_waiters.values():
            if not waiter.done():  # waiters learn why instead of seeing a stray cancellation
                waiter.set_exception(RuntimeError("the store was closed"))
        self._terminal_waiters.clear()
        self._feeds.wake_all()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _acquire_lock(self) -> None:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _lock_owner(fd)
            os.close(fd)
            raise StoreLocked(
                f"store locked by pid {owner}: the database {self.path} is in use by "
                "another process; one process owns a SQLite store (stop it, use another "
                "database, or the Redis store to share work)",
                path=str(self.path), pid=owner,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_file = fd

    async def _load_live_jobs(self) -> None:
        """Rebuild the in-memory mirror and recover jobs a crashed process left running."""
        reader = self._require_reader()
        rows = reader.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ('queued', 'running') "
            "ORDER BY created_at"
        ).fetchall()
        last_ids = dict(reader.execute(
            "SELECT e.job_id, max(e.id) FROM events e JOIN jobs j ON j.id = e.job_id "
            "WHERE j.status IN ('queued', 'running') GROUP BY e.job_id"
        ).fetchall())
        for job_id, ticket, attached in reader.execute(
                "SELECT t.job_id, t.ticket, t.attached FROM job_tickets t JOIN jobs j "
                "ON j.id = t.job_id WHERE j.status IN ('queued', 'running') "
                "ORDER BY t.job_id, t.seq"):
            self._tickets.setdefault(job_id, {})[ticket] = bool(attached)
        orphans: list[Job] = []
        for row in rows:
            job = _row_to_job(row)
            job.last_event_id = last_ids.get(job.id, 0)
            self._live[job.id] = job
            self._index_live(job)
            if job.status is JobStatus.QUEUED:
                self._enqueue(job)
            else:
                orphans.append(job)
        for job in orphans:
            await self._reclaim(job, rules.WORKER_LOST)

    async def _reclaim(self, job: Job, reason: str) -> None:
        """A running job whose worker is gone (the previous process died, or the lease
        lapsed): the token moves on, so the old worker can never write to it again."""
        transition = rules.orphan_transition(job, reason)
        undo = self._undo_to(job)
        job.lease_token += 1
        if transition.status is JobStatus.QUEUED:
            self._to_queue(job, delay=0.0)
            await self._write(job, [transition.event], wait=True, undo=undo)
        else:
            await self._end(job, transition.status, transition.event, error=transition.error,
                            undo=undo)

    # -- writing ---------------------------------------------------------------------
    def _require_reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the store is not open")
        return self._reader

    def _require_writer(self) -> Writer[_JobOp]:
        if self._writer is None:
            raise RuntimeError("the store is not open")
        return self._writer

    def _on_committed(self, batch: list[_JobOp], error: BaseException | None) -> None:
        full = error is not None and halts(error)
        if full:
            self._health.disk_full()
        for op in batch:
            held = False
            if error is not None:
                if op.undo is not None:
                    op.undo()
                elif op.future is None and full:  # nobody waits for it: written later
                    self._hold(op)
                    held = True
            if op.terminal is not None and error is None:
                self._on_terminal_committed(op.terminal)
            if op.announce is not None and error is None:
                self._notify_job(op.announce)
            if op.job_id is not None and op.rows and self._feeds.wants(op.job_id):
                if error is None:  # durable now: hand the events to the followers
                    self._feeds.publish(op.job_id, _events_from_rows(
                        op.job_id, [row[1:] for row in op.rows]), op.size)
                elif not held:
                    self._feeds.lost(op.job_id)
            if op.settles is not None:
                self._settle(op.settles)

    def _on_terminal_committed(self, job: Job) -> None:
        live = self._live.get(job.id)
        if live is not None and live.status.terminal:
            del self._live[job.id]
            self._tickets.pop(job.id, None)
            self._unindex_live(live)
        waiter = self._terminal_waiters.pop(job.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(job)

    async def _write(self, job: Job, events: Sequence[NewEvent], *, wait: bool,
                     insert: bool = False, update: bool = True,
                     undo: Callable[[], None] | None = None,
                     also: Sequence[tuple[str, Any, bool]] = ()) -> None:
        """Persist ``job`` (insert or update) and append ``events`` to its log. ``wait``:
        durable when it returns; if the commit fails, ``undo`` has put back what the
        caller changed in memory, and it raises (StorageFull for a full disk). ``also``:
        statements of the same transaction (the job's tickets)."""
        now = time.time()
        rows = []
        for etype, data in events:
            job.last_event_id += 1
            rows.append((job.id, job.last_event_id, etype.value, now, _dumps(data)))
        statements: list[tuple[str, Any, bool]] = []
        if insert:
            statements.append((_INSERT_JOB, _job_params(job), False))
        elif update:
            statements.append((_UPDATE_JOB, _update_params(job), False))
        if rows:
            statements.append((_INSERT_EVENT, rows, True))
        statements.extend(also)
        terminal = job.copy() if job.status.terminal else None
        if terminal is not None:  # a job is written terminal once: when it ends
            statements.append((_COUNT_FINISHED, (job.owner, job.function, job.status.value),
                               False))
        announce = None
        if self._job_callbacks and any(t in _STATUS_EVENTS for t, _ in events):
            announce = terminal or job.copy()
        # Followers only hear of new events (not of lease renewals, say).
        wake = job.id if rows else None
        op = _JobOp(statements, job_id=wake, terminal=terminal, announce=announce,
                    rows=rows or None, size=sum(len(row[4]) for row in rows),
                    seq=next(self._seqs))
        if wait:
            op.undo = undo
            await self._commit(op, settles=job.id)
        elif self._health.full_since is not None:
            self._hold(op)
        else:
            writer = self._require_writer()
            writer.submit(op)
            await writer.keep_up()

    def _op(self, statements: list[tuple[str, Any, bool]]) -> _JobOp:
        """An op that is no job's: purges, artifacts, probes."""
        return _JobOp(statements, seq=next(self._seqs))

    async def _commit(self, op: _JobOp, settles: str | None = None) -> None:
        """Commit ``op`` and return once it is durable. While the disk is full the ops
        held are written first, in order, so ``op`` commits only after them. Until it
        settles, job ``settles`` is not claimed and its next durable write waits."""
        writer = self._require_writer()
        if (refusal := self._health.refusal()) is not None:
            self._abandon(op)
            raise refusal
        if settles is not None:
            op.settles = settles
            self._unsettled[settles] = None  # a future only once someone waits
        if self._health.full_since is not None:
            try:
                await writer.wait_idle()  # every op the halt caught is back (held, undone)
            except BaseException:  # cancelled before ``op`` was submitted
                self._abandon(op)
                raise
            writer.resume()
            held, self._held, self._held_bytes = self._held, [], 0
            for earlier in sorted(held, key=lambda o: o.seq):
                writer.submit(earlier)
        try:
            await writer.write(op)
        except sqlite3.Error as exc:
            if halts(exc):
                raise self._health.full() from exc
            raise
        self._health.space_back()

    def _abandon(self, op: _JobOp) -> None:
        """``op`` will never be submitted: undo it, and let its job be claimed."""
        if op.undo is not None:
            op.undo()
        if op.settles is not None:
            self._settle(op.settles)

    def _hold(self, op: _JobOp) -> None:
        self._held.append(op)
        self._held_bytes += op.held_bytes()

    def _held_events(self) -> int:
        return sum(len(op.rows or ()) for op in self._held)

    def _settle(self, job_id: str) -> None:
        """The durable write of ``job_id`` is committed or undone: claims may take it."""
        waiter = self._unsettled.pop(job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if job_id in self._queues:
            self._notify_work()

    async def _settled(self, job_id: str) -> None:
        """Wait until no durable write of ``job_id`` is in flight (each undoes only its
        own change, so they go one at a time)."""
        while job_id in self._unsettled:
            waiter = self._unsettled[job_id]
            if waiter is None:
                waiter = self._unsettled[job_id] = self._require_loop().create_future()
            await asyncio.shield(waiter)

    def _undo_to(self, job: Job) -> Callable[[], None]:
        """An undo that puts a live ``job`` back as it is now, in or out of the queue."""
        saved = job.copy()
        queued = job.id in self._queues

        def undo() -> None:
            for name in _JOB_FIELDS:
                setattr(job, name, getattr(saved, name))
            self._queues.remove(job.id)
            if queued:
                self._enqueue(job)  # behind the jobs of its priority queued meanwhile

        return undo

    def _forget(self, job: Job) -> None:
        """Undo a submission: the job was never stored."""
        self._live.pop(job.id, None)
        self._tickets.pop(job.id, None)
        self._unindex_live(job)
        self._queues.remove(job.id)

    # -- trouble with the file (sqlite_health.py) ------------------------------------
    def problem(self) -> str | None:
        """Store.problem, from any thread. While the disk is full it also asks for a
        probe, so a readiness check alone finds space back, with workers or without."""
        self._health.check_file()
        if self._health.full_since is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to probe
                self._loop.call_soon_threadsafe(self._probe_soon)
        return self._health.problem(self._held_events())

    def _probe_soon(self) -> None:
        """Start a probe, unless one runs or began less than PROBE_INTERVAL s ago."""
        now = time.monotonic()
        if ((self._probing is None or self._probing.done())
                and now - self._probed_at >= PROBE_INTERVAL and self._writer is not None):
            self._probed_at = now
            self._probing = self._require_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """While the disk is full: one small write, after the held ops. If it commits,
        space is back and the store takes work again."""
        with contextlib.suppress(StoreUnavailable):  # still full, or the file is lost
            await self._commit(self._op([(_PROBE, (time.time(),), False)]))

    async def housekeep(self, now: float) -> None:
        self._health.check_file()
        if self._health.full_since is not None:
            self._probed_at = time.monotonic()
            await self._probe()
        if self._health.full_since is None and not self._health.lost:
            await super().housekeep(now)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the store is not open")
        return self._loop

    # -- in-memory queue bookkeeping -------------------------------------------------
    def _index_live(self, job: Job) -> None:
        if job.cache_key is not None:  # the newest live job answers, as on Redis
            self._inflight[(job.owner, job.cache_key)] = job.id
        if job.idempotency_key is not None:
            self._idempotent[(job.owner, job.idempotency_key)] = job.id

    def _unindex_live(self, job: Job) -> None:
        if job.cache_key is not None and self._inflight.get((job.owner, job.cache_key)) == job.id:
            del self._inflight[(job.owner, job.cache_key)]
        if job.idempotency_key is not None:
            self._idempotent.pop((job.owner, job.idempotency_key), None)

    def _enqueue(self, job: Job) -> None:
        """Queue a job; a delayed one wakes the workers when its delay ends."""
        wait = self._queues.add(job, time.time())
        if wait is not None:
            loop = self._require_loop()
            loop.call_at(loop.time() + wait, self._notify_work)

    def _to_queue(self, job: Job, delay: float) -> None:
        job.status = JobStatus.QUEUED
        job.not_before = time.time() + delay if delay > 0 else 0.0
        job.worker_id = None
        job.lease_until = None
        self._enqueue(job)
        self._notify_work()

    # -- submission and reads --------------------------------------------------------
    async def create_job(self, job: Job, policy: SubmitPolicy) -> Submitted:
        self._health.check_file(max_age=SUBMIT_CHECK_INTERVAL)
        if (refusal := self._health.refusal()) is not None:
            raise refusal
        if job.idempotency_key is not None or job.cache_key is not None:
            await self._settle_duplicates(job)
        if job.idempotency_key is not None:
            existing = await self._find_idempotent(job.owner, job.idempotency_key)
            if existing is not None:
                if existing.function != job.function or existing.input != job.input:
                    raise IdempotencyConflict(
                        f"idempotency key {job.idempotency_key!r} was already used for a "
                        "different function or input",
                        idempotency_key=job.idempotency_key, job_id=existing.id,
                    )
                return Submitted(existing, created=False, reason=SubmitReason.IDEMPOTENT,
                                 ticket=self._first_ticket(existing.id))
        if job.cache_key is not None:
            if policy.dedupe:
                live_id = self._inflight.get((job.owner, job.cache_key))
                live = None if live_id is None else self._live.get(live_id)
                # (not one being cancelled: it must not take new submissions with it)
                if live is not None and not live.status.terminal and not live.cancel_requested:
                    return await self._join(live, job.ticket)
            if policy.cache_ttl is not None:
                cached = self._find_cached(job.cache_key, policy.cache_ttl)
                if cached is not None:
                    return Submitted(await self._create_cached(job, cached), False,
                                     SubmitReason.CACHED, job.ticket)
        queued = self._queues.owner_depth(job.owner)
        if policy.owner_max_queued is not None and queued >= policy.owner_max_queued:
            raise rules.owner_quota_refusal(job.owner, queued, policy)
        depth = self._queues.depth(job.function)
        if policy.max_queue is not None and depth >= policy.max_queue:
            raise QueueFull(
                f"the queue of {job.function!r} is full ({depth} of {policy.max_queue} jobs "
                "waiting); retry later",
                function=job.function, max_queue=policy.max_queue, retry_after=policy.retry_after,
            )
        job.status = JobStatus.QUEUED
        self._live[job.id] = job
        self._index_live(job)
        self._enqueue(job)  # claimed once the insert is settled (it wakes the workers)
        position = self._queues.position(job.id) or 1
        also = []
        if job.ticket is not None:
            self._tickets[job.id] = {job.ticket: True}
            also.append((_INSERT_TICKET, (job.id, 0, job.ticket), False))
        await self._write(job, [rules.queued_event(position)], wait=True, insert=True,
                          undo=functools.partial(self._forget, job), also=also)
        return Submitted(job.copy(), created=True, ticket=job.ticket)

    async def _join(self, live: Job, ticket: str | None) -> Submitted:
        """A de-duplicated submission holds ``live`` too, with its own ticket."""
        if ticket is not None:
            tickets = self._tickets.setdefault(live.id, {})
            if ticket not in tickets:  # (a retried submission is one holder)
                seq = len(tickets)
                tickets[ticket] = True
                try:
                    await self._commit(self._op([(_INSERT_TICKET, (live.id, seq, ticket),
                                                  False)]))
                except BaseException:
                    tickets.pop(ticket, None)
                    raise
        return Submitted(live.copy(), False, SubmitReason.DEDUPLICATED, ticket)

    def _first_ticket(self, job_id: str) -> str | None:
        """The ticket of the submission that created the job (an idempotent answer)."""
        tickets = self._tickets.get(job_id)
        if tickets:
            return next(iter(tickets))
        row = self._require_reader().execute(
            "SELECT ticket FROM job_tickets WHERE job_id=? AND seq=0", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    async def _settle_duplicates(self, job: Job) -> None:
        """Wait for the submissions in flight that ``job``'s idempotency key or cache key
        would be answered with: one refused by a full disk must not answer it."""
        keys = ((self._idempotent, job.idempotency_key), (self._inflight, job.cache_key))
        while pending := [index[(job.owner, key)] for index, key in keys
                          if key is not None and index.get((job.owner, key)) in self._unsettled]:
            await self._settled(pending[0])

    async def _find_idempotent(self, owner: str, key: str) -> Job | None:
        live_id = self._idempotent.get((owner, key))
        if live_id is not None and live_id in self._live:
            return self._live[live_id].copy()
        row = self._require_reader().execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner=? AND idempotency_key=?", (owner, key)
        ).fetchone()
        return None if row is None else _row_to_job(row)

    def _find_cached(self, cache_key: str, ttl: float) -> Job | None:
        row = self._require_reader().execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE cache_key=? AND status='succeeded' "
            "AND finished_at >= ? ORDER BY finished_at DESC LIMIT 1",
            (cache_key, time.time() - ttl),
        ).fetchone()
        return None if row is None else _row_to_job(row)

    async def _create_cached(self, job: Job, cached: Job) -> Job:
        now = time.time()
        job.status = JobStatus.SUCCEEDED
        job.started_at = job.finished_at = now
        job.result = cached.result
        also = ([] if job.ticket is None
                else [(_INSERT_TICKET, (job.id, 0, job.ticket), False)])
        await self._write(job, [rules.cached_event(cached.result, cached.id)],
                          wait=True, insert=True, also=also)
        return job.copy()

    async def get_job(self, job_id: str) -> Job | None:
        live = self._live.get(job_id)
        if live is not None:
            return live.copy()
        row = self._require_reader().execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if row is None:
            return None
        job = _row_to_job(row)
        last = self._require_reader().execute(
            "SELECT max(id) FROM events WHERE job_id=?", (job_id,)
        ).fetchone()
        job.last_event_id = last[0] or 0
        return job

    async def list_jobs(self, *, owner: str | None = None, function: str | None = None,
                        status: JobStatus | None = None, limit: int = 50,
                        before: float | None = None,
                        before_id: str | None = None) -> list[Job]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("owner", owner), ("function", function)):
            if value is not None:
                where.append(f"{column}=?")
                params.append(value)
        if before is not None and before_id is not None:
            where.append("(created_at, id)<(?, ?)")  # a range of the *_id indexes
            params.extend((before, before_id))
        elif before is not None:
            where.append("created_at<?")
            params.append(before)
        # Rows of live jobs may lag their in-memory state: live statuses are answered
        # from memory, and every row is overlaid with its live job.
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if status is not None and not status.terminal:
            ids = [j for j in self._live.values() if j.status is status
                   and (owner is None or j.owner == owner)
                   and (function is None or j.function == function)
                   and (before is None or (j.created_at < before if before_id is None
                                           else (j.created_at, j.id) < (before, before_id)))]
            ids.sort(key=lambda j: (j.created_at, j.id), reverse=True)
            return [j.copy() for j in ids[:limit]]
        if status is not None:
            sql += (" AND " if where else " WHERE ") + "status=?"
            params.append(status.value)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        # A row's status may lag a live job's, but a terminal status never changes, so
        # the rows the status filter keeps are the ones to show: no over-fetch needed.
        params.append(limit)
        jobs = []
        for row in self._require_reader().execute(sql, params):
            job = _row_to_job(row)
            live = self._live.get(job.id)
            if live is not None:
                job = live.copy()
            if status is None or job.status is status:
                jobs.append(job)
            if len(jobs) >= limit:
                break
        return jobs

    async def queue_position(self, job_id: str) -> int | None:
        if job_id not in self._queues:
            return None
        self._queues.promote(time.time())  # a retry whose delay just ended has a place
        return self._queues.position(job_id)

    async def queue_depth(self, function: str) -> int:
        return self._queues.depth(function)

    # -- events ----------------------------------------------------------------------
    async def append_events(self, job_id: str, events: Sequence[NewEvent], lease: Lease) -> int:
        job = self._leased(job_id, lease)
        if events:
            if (refusal := self._health.refusal()) is not None:
                raise refusal
            if self._health.full_since is not None and self._held_bytes >= self.max_held_bytes:
                raise self._health.full()  # nothing taken: the caller keeps the events
            await self._write(job, events, wait=False, update=False)
        return job.last_event_id

    async def read_events(self, job_id: str, after: int = 0, limit: int = 1000,
                          max_bytes: int = PAGE_BYTES) -> list[Event]:
        return self._read_page(job_id, after, limit, max_bytes)[0]

    def _read_page(self, job_id: str, after: int, limit: int,
                   max_bytes: int) -> tuple[list[Event], bool]:
        """A page of the log, and whether a limit cut it short (more may follow)."""
        cursor = self._require_reader().execute(
            "SELECT id, type, ts, data FROM events WHERE job_id=? AND id>? ORDER BY id LIMIT ?",
            (job_id, after, limit))
        rows: list[tuple[Any, ...]] = []
        size = 0
        for row in cursor:  # rows are stepped one by one: a page reads only its own
            rows.append(row)
            size += len(row[3])
            if size >= max_bytes:
                cursor.close()
                break
        cut = len(rows) >= limit or size >= max_bytes
        return (_events_from_rows(job_id, rows) if rows else []), cut

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        if job_id not in self._live and await self.get_job(job_id) is None:
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        # A live job's follower subscribes to the in-memory feed *before* its first read
        # (sqlite_feed.py: why that leaves no gap); a finished job's log is only read.
        feed = self._feeds.subscribe(job_id) if job_id in self._live else None
        try:
            synced = False  # every event after the last read is in the feed
            while True:
                if self._reader is None:
                    return  # the store closed
                if feed is None or not synced or feed.overflowed:
                    if feed is not None and feed.overflowed:
                        feed.reset()  # and read at once: no await in between
                    events, more = self._read_page(job_id, after, _CATCH_UP, PAGE_BYTES)
                    synced = not more
                    if not events and job_id not in self._live:
                        return  # terminal and committed, and nothing after ``after``
                else:
                    events = feed.take(after)
                    if not events:
                        if job_id not in self._live:  # ended: the file holds the rest
                            synced = False
                        else:
                            await feed.wait()
                        continue
                if events:
                    yield events
                    after = events[-1].id
                    if events[-1].terminal:
                        return
        finally:
            if feed is not None:
                self._feeds.unsubscribe(job_id, feed)

    async def wait_terminal(self, job_id: str, timeout: float | None = None) -> Job:
        live = self._live.get(job_id)
        if live is None:
            job = await self.get_job(job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id}", job_id=job_id)
            return job
        waiter = self._terminal_waiters.get(job_id)
        if waiter is None:
            waiter = self._terminal_waiters[job_id] = self._require_loop().create_future()
        shielded = asyncio.shield(waiter)  # one caller's timeout must not cancel the others
        try:
            job = await (shielded if timeout is None else asyncio.wait_for(shielded, timeout))
            return job.copy()
        except TimeoutError:
            current = self._live.get(job_id)
            state = "finishing" if current is None else current.status.value
            raise ResultTimeout(
                f"job {job_id} did not finish within {timeout} s (it is still {state})",
                job_id=job_id, timeout=timeout,
            ) from None

    # -- the worker's side -----------------------------------------------------------
    async def claim(self, functions: Iterable[str], worker_id: str, lease: float,
                    limits: Mapping[str, int] | None = None,
                    warmth: Warmth | None = None) -> Job | None:
        if self._health.full_since is not None or self._health.lost:
            return None  # nothing starts that could not log it; housekeeping probes
        now = time.time()
        self._queues.promote(now)
        functions = list(functions)
        if limits:
            running = self._running_counts()
            functions = [f for f in functions
                         if f not in limits or running.get(f, 0) < limits[f]]
        skip = self._owner_at_quota() if self._queues.limited else None
        while (job_id := self._next_claim(functions, worker_id, warmth, now,
                                          skip)) is not None:
            job = self._live[job_id]
            if job_id in self._unsettled:  # its write is in flight: taken once settled
                functions.remove(job.function)
                continue
            if rules.queue_timed_out(job, now):
                await self._end(job, JobStatus.EXPIRED, rules.expired_event())
                continue
            self._queues.take(job_id)
            job.status = JobStatus.RUNNING
            job.attempts += 1
            job.started_at = now
            job.worker_id = worker_id
            job.lease_until = now + lease
            job.lease_token += 1
            await self._write(job, [rules.started_event(job)], wait=False)
            return job.copy()
        return None

    def _owner_at_quota(self) -> Callable[[str], bool]:
        """Whether a queued job's owner runs its ``owner_max_running`` jobs already
        (counted over the running jobs once, when a job with a quota is first asked
        about): claims pass over such jobs."""
        running: Counter[str] | None = None

        def skip(job_id: str) -> bool:
            nonlocal running
            job = self._live[job_id]
            if job.owner_max_running is None:
                return False
            if running is None:
                running = Counter(j.owner for j in self._live.values()
                                  if j.status is JobStatus.RUNNING)
            return running[job.owner] >= job.owner_max_running

        return skip

    def _next_claim(self, functions: list[str], worker_id: str, warmth: Warmth | None,
                    now: float, skip: Callable[[str], bool] | None) -> str | None:
        """The job a claim takes: the best head over ``functions`` (priority, fair tag,
        arrival), each function's head chosen by warm routing when ``warmth`` gives it
        a bound (genq.store.routing), else its first ready job; jobs whose owner is at
        its running quota (``skip``, None while no queued job has one) passed over."""
        if warmth is None:
            return self._queues.next_ready(functions, skip)
        best: ReadyEntry | None = None
        others: set[str] | None = None  # what the other live workers hold, once needed
        for function in functions:
            bound = warmth.waits.get(function, 0.0)
            if bound <= 0:  # no routing for it: a bound of 0 passes no job over
                entry = self._queues.head(function, skip)
            else:
                if others is None:
                    others = self._held_by_others(worker_id, now)
                entry = self._routed_head(function, warmth.holds, others, bound, now, skip)
            if entry is not None and (best is None or entry < best):
                best = entry
        return None if best is None else best[JOB_ID]

    def _routed_head(self, function: str, holds: frozenset[str], others: set[str],
                     bound: float, now: float, skip: Callable[[str], bool] | None
                     ) -> ReadyEntry | None:
        window = self._queues.head_level(function, routing.WINDOW, skip)
        jobs = (self._live[entry[JOB_ID]] for entry in window)  # lazily: the head often wins
        chosen = routing.choose(
            (routing.Candidate(job.id, job.affinity,
                               routing.runnable_since(job.created_at, job.not_before),
                               rules.queue_timed_out(job, now)) for job in jobs),
            holds, others.__contains__, bound, now)
        return next((e for e in window if e[JOB_ID] == chosen), None)

    def _held_by_others(self, worker_id: str, now: float) -> set[str]:
        """Affinity keys held by the live workers other than ``worker_id``."""
        held: set[str] = set()
        for info, gone_after in self._workers.values():
            if info.id != worker_id and gone_after > now:
                held |= info.holds
        return held

    async def claim_many(self, wants: Mapping[str, int], worker_id: str, lease: float,
                         limits: Mapping[str, int] | None = None,
                         warmth: Warmth | None = None) -> list[Job]:
        left = {f: n for f, n in wants.items() if n > 0}
        jobs: list[Job] = []
        while left and (job := await self.claim(left, worker_id, lease, limits,
                                                warmth)) is not None:
            jobs.append(job)
            left[job.function] -= 1
            if not left[job.function]:
                del left[job.function]
        return jobs

    def _running_counts(self) -> Counter[str]:
        return Counter(j.function for j in self._live.values() if j.status is JobStatus.RUNNING)

    async def extend_leases(self, worker_id: str, leases: Mapping[str, int],
                            lease: float) -> LeaseReport:
        until = time.time() + lease
        cancelled, lost = set(), set()
        for job_id, token in leases.items():
            job = self._live.get(job_id)
            if job is None or not job.held_by(Lease(worker_id, token)):
                lost.add(job_id)
                continue
            # In memory only: at open every running job is reclaimed whatever its lease,
            # so the file's copy would serve nobody (and a full disk would refuse it).
            job.lease_until = until
            if job.cancel_requested:
                cancelled.add(job_id)
        return LeaseReport(frozenset(cancelled), frozenset(lost))

    def _leased(self, job_id: str, lease: Lease) -> Job:
        """The live job ``lease`` still holds; raises LeaseLost otherwise."""
        job = self._live.get(job_id)
        if job is None or not job.held_by(lease):
            raise rules.lease_lost(job_id, lease)
        return job

    async def finish(self, job_id: str, status: JobStatus, *, result: Any = None,
                     error: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                     lease: Lease | None = None) -> Job:
        event = rules.terminal_event(status, result=result, error=error, data=data)
        await self._settled(job_id)
        job = self._live.get(job_id)
        if job is None or job.status.terminal:
            return await self._as_stored(job_id)
        if lease is not None:
            self._leased(job_id, lease)
        return await self._end(job, status, event, result=result, error=error)

    async def _as_stored(self, job_id: str) -> Job:
        """A job that is no longer live (finish and cancel leave it as it is)."""
        existing = await self.get_job(job_id)
        if existing is None:
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        return existing

    async def _end(self, job: Job, status: JobStatus, event: NewEvent, *, result: Any = None,
                   error: dict[str, Any] | None = None,
                   undo: Callable[[], None] | None = None,
                   also: Sequence[tuple[str, Any, bool]] = ()) -> Job:
        """Make a live job terminal with ``event``; durable when it returns. ``undo``:
        the caller's, when it changed the job before."""
        undo = undo or self._undo_to(job)
        self._queues.remove(job.id)
        job.status = status
        job.finished_at = time.time()
        job.result = result
        job.error = error
        job.lease_until = None
        await self._write(job, [event], wait=True, undo=undo, also=also)
        return job.copy()

    async def retry(self, job_id: str, delay: float, error: dict[str, Any],
                    lease: Lease) -> Job:
        await self._settled(job_id)
        job = self._leased(job_id, lease)
        if job.cancel_requested:
            return await self._end(job, JobStatus.CANCELLED, rules.cancelled_event())
        event = rules.retrying_event(job, delay, error)
        undo = self._undo_to(job)
        self._to_queue(job, delay)
        await self._write(job, [event], wait=True, undo=undo)
        return job.copy()

    async def requeue(self, job_id: str, reason: str, lease: Lease) -> Job:
        await self._settled(job_id)
        job = self._leased(job_id, lease)
        if job.cancel_requested:
            return await self._end(job, JobStatus.CANCELLED, rules.cancelled_event())
        undo = self._undo_to(job)
        event = rules.requeued_event(job.attempts, reason, counted=False)
        job.attempts = max(0, job.attempts - 1)
        self._to_queue(job, 0.0)
        await self._write(job, [event], wait=True, undo=undo)
        return job.copy()

    async def cancel(self, job_id: str, reason: str = rules.CANCELLED_BY_REQUEST, *,
                     ticket: str | None = None) -> Job:
        await self._settled(job_id)
        job = self._live.get(job_id)
        if job is None or job.status.terminal:
            stored = await self._as_stored(job_id)
            if ticket is not None and not self._had_ticket(job_id, ticket):
                raise rules.unknown_ticket(job_id)
            return stored
        if ticket is not None:
            tickets = self._tickets.get(job_id, {})
            if ticket not in tickets:
                raise rules.unknown_ticket(job_id)
            if not tickets[ticket]:
                return job.copy()  # let go already: a retried call
            tickets[ticket] = False
            try:
                return await self._detach(job, list(tickets).index(ticket), reason,
                                          any(tickets.values()))
            except BaseException:
                tickets[ticket] = True  # not written: still held
                raise
        return await self._cancel_now(job, reason)

    async def _detach(self, job: Job, seq: int, reason: str, held: bool) -> Job:
        """Record that ticket ``seq`` let go of ``job``; cancel it if no one ``held`` it."""
        also = [(_DETACH_TICKET, (job.id, seq), False)]
        if held:  # others still hold it: it goes on for them
            await self._commit(self._op(also))
            return job.copy()
        return await self._cancel_now(job, reason, also)

    async def _cancel_now(self, job: Job, reason: str,
                          also: Sequence[tuple[str, Any, bool]] = ()) -> Job:
        if job.status is JobStatus.QUEUED:
            return await self._end(job, JobStatus.CANCELLED, rules.cancelled_event(reason),
                                   also=also)
        asked = job.cancel_requested
        if not asked or also:
            job.cancel_requested = True
            # Only the flag: the job's events go on meanwhile, their ids are not undone.
            await self._write(job, [], wait=True, also=also,
                              undo=functools.partial(setattr, job, "cancel_requested", asked))
            if not asked:
                self._notify_cancel(job.id)
        return job.copy()

    def _had_ticket(self, job_id: str, ticket: str) -> bool:
        return self._require_reader().execute(
            "SELECT 1 FROM job_tickets WHERE job_id=? AND ticket=?", (job_id, ticket)
        ).fetchone() is not None

    async def _expire_queued(self, now: float) -> None:
        while (job_id := self._queues.pop_expired(now)) is not None:
            await self._settled(job_id)
            job = self._live.get(job_id)
            if (job is not None and job.status is JobStatus.QUEUED
                    and rules.queue_timed_out(job, now)):
                await self._end(job, JobStatus.EXPIRED, rules.expired_event())

    async def _reclaim_lapsed(self, now: float) -> None:
        lapsed = [j for j in self._live.values() if j.status is JobStatus.RUNNING
                  and j.lease_until is not None and j.lease_until <= now
                  and j.id not in self._unsettled]
        for job in lapsed:
            await self._reclaim(job, rules.LEASE_LAPSED)

    async def purge_finished(self, before: float, limit: int) -> int:
        # Chosen on the reader, deleted by the writer: a finished job never changes
        # again, so the rows read are still the ones to delete. The idempotency key and
        # the cache entry live in the job's row, so they go with it; de-duplication
        # only ever names live jobs (in memory).
        async with self._purging:
            ids = [(row[0],) for row in self._require_reader().execute(
                # ``+status``: a check on each row, so the oldest-first walk of
                # jobs_by_finished is the plan, not a sort of every finished job.
                f"SELECT id FROM jobs WHERE finished_at < ? AND +status IN ({_TERMINAL_SQL}) "
                "ORDER BY finished_at LIMIT ?", (before, limit))
                if row[0] not in self._live]
            if not ids:
                return 0
            await self._commit(self._op([
                ("DELETE FROM events WHERE job_id=?", ids, True),
                ("DELETE FROM artifacts WHERE job_id=?", ids, True),
                ("DELETE FROM job_tickets WHERE job_id=?", ids, True),
                ("DELETE FROM jobs WHERE id=?", ids, True)]))
            return len(ids)

    # -- the cluster (one process: the workers of this store) ------------------------
    async def register_worker(self, info: WorkerInfo, ttl: float) -> None:
        self._workers[info.id] = (info, info.seen_at + ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def workers(self) -> list[WorkerInfo]:
        now = time.time()
        return [info for info, gone_after in self._workers.values() if gone_after > now]

    async def running_counts(self) -> dict[str, int]:
        return dict(self._running_counts())

    # -- webhooks --------------------------------------------------------------------
    @functools.cached_property
    def webhooks(self) -> SQLiteWebhooks:
        """The jobs' webhook records (store/sqlite_webhooks.py), in this file."""
        async def commit(statements: list[tuple[str, Any, bool]]) -> None:
            await self._commit(self._op(statements))

        return SQLiteWebhooks(commit, self._require_reader)

    async def finished_stats(self, since: float, limit: int) -> FinishedStats:
        reader = self._require_reader()
        totals = {(owner, function, status): n for owner, function, status, n
                  in reader.execute("SELECT owner, function, status, n FROM finished_totals")}
        recent = [FinishedJob(owner, function, JobStatus(status), created, started, finished)
                  for owner, function, status, created, started, finished in reader.execute(
                      # newest first along jobs_by_finished, at most ``limit`` rows
                      "SELECT owner, function, status, created_at, started_at, finished_at "
                      f"FROM jobs WHERE finished_at >= ? AND +status IN ({_TERMINAL_SQL}) "
                      "ORDER BY finished_at DESC LIMIT ?", (since, limit))]
        return FinishedStats(totals, recent)

    # -- artifacts -------------------------------------------------------------------
    async def put_artifact(self, job_id: str, name: str, content_type: str,
                           data: bytes) -> ArtifactRef:
        ref = ArtifactRef(uuid.uuid4().hex, job_id, name, content_type, len(data))
        await self._commit(self._op([(
            "INSERT INTO artifacts (id, job_id, name, content_type, size, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ref.id, job_id, name, content_type, ref.size, data), False,
        )]))
        return ref

    async def get_artifact(self, artifact_id: str) -> tuple[ArtifactRef, bytes] | None:
        row = self._require_reader().execute(
            "SELECT id, job_id, name, content_type, size, data FROM artifacts WHERE id=?",
            (artifact_id,),
        ).fetchone()
        if row is None:
            return None
        return ArtifactRef(*row[:5]), bytes(row[5])
