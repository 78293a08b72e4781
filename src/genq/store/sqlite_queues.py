"""The SQLite store's queues in memory: which queued job runs next, and when.

The SQLite store answers claims, queue positions and depths from memory (the file is
only written to), so it keeps every queued job here, in three structures:

* **A ready list per function**, ordered by ``(-priority, arrival)``: the head is the
  next claim, and a job's index is its queue position - 1. It is an order-statistic
  list (``SortedList``), so taking the head, cancelling any job and asking any job's
  position are each O(log n), where a heap would make the last two O(n).
* **A delayed heap** of ``(not_before, id)``: retries waiting out their backoff. They
  count in their function's depth (a full queue refuses submissions whatever the jobs
  wait for) but have no position until ``promote`` moves them to the ready list.
* **An expiry heap** of ``(expires_at, id)``: queued jobs with a queue timeout, oldest
  deadline first, for housekeeping.

Removal is lazy in the heaps: a job that leaves the queue (claimed, cancelled, expired)
is dropped from its ready list and from the index of queued jobs at once, and its heap
entries are skipped when they come up. Arrival order is a sequence number given at
each ``add``, so a retried job goes behind the jobs of its priority that are waiting.

A plain class with no loop, file or clock of its own: the store passes ``now`` and
schedules its own wake-ups, so the ordering rules can be tested directly
(tests/test_sqlite_queues.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sortedcontainers import SortedList

from genq.models import Job

ReadyEntry = tuple[int, int, str]  # (-priority, sequence number, job id)


class _Queued(NamedTuple):
    function: str
    priority: int
    seq: int

    def entry(self, job_id: str) -> ReadyEntry:
        return (-self.priority, self.seq, job_id)


@dataclass(slots=True)
class _FunctionQueue:
    ready: SortedList = field(default_factory=SortedList)  # of ReadyEntry, claim order
    depth: int = 0  # queued jobs: ready, or waiting for a retry delay


class JobQueues:
    """Every queued job of a store, by function: claim order, positions, depths, delays
    and queue timeouts."""

    def __init__(self) -> None:
        self._functions: dict[str, _FunctionQueue] = {}
        self._queued: dict[str, _Queued] = {}  # job id -> where it is queued
        self._delayed: list[tuple[float, str]] = []  # (not_before, id) of retries waiting
        self._expiry: list[tuple[float, str]] = []  # (expires_at, id) of queued jobs
        self._seq = 0

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._queued

    def _function(self, function: str) -> _FunctionQueue:
        q = self._functions.get(function)
        if q is None:
            q = self._functions[function] = _FunctionQueue()
        return q

    def add(self, job: Job, now: float) -> float | None:
        """Queue ``job`` behind every job of its priority. Returns None when it is ready
        at once, else the seconds until its ``not_before`` (the caller wakes the workers
        then; ``promote`` makes it ready)."""
        self._seq += 1
        queued = self._queued[job.id] = _Queued(job.function, job.priority, self._seq)
        q = self._function(job.function)
        q.depth += 1
        wait: float | None = None
        if job.not_before > now:
            heapq.heappush(self._delayed, (job.not_before, job.id))
            wait = job.not_before - now
        else:
            q.ready.add(queued.entry(job.id))
        if job.expires_at is not None and job.started_at is None:
            heapq.heappush(self._expiry, (job.expires_at, job.id))
        return wait

    def remove(self, job_id: str) -> None:
        """Take a job out of the queue, if it is queued (its heap entries go stale)."""
        queued = self._queued.pop(job_id, None)
        if queued is not None:
            q = self._function(queued.function)
            q.ready.discard(queued.entry(job_id))
            q.depth -= 1

    def promote(self, now: float) -> None:
        """Make the delayed jobs whose ``not_before`` has come ready."""
        while self._delayed and self._delayed[0][0] <= now:
            _, job_id = heapq.heappop(self._delayed)
            queued = self._queued.get(job_id)
            if queued is not None:
                ready = self._function(queued.function).ready
                if (entry := queued.entry(job_id)) not in ready:
                    ready.add(entry)

    def next_ready(self, functions: Iterable[str]) -> str | None:
        """The job a claim of ``functions`` takes: highest priority, then first queued,
        across the functions. It stays queued until ``remove``."""
        best: ReadyEntry | None = None
        for function in functions:
            head = self.head(function)
            if head is not None and (best is None or head < best):
                best = head
        return None if best is None else best[2]

    def head(self, function: str) -> ReadyEntry | None:
        """The next ready job of ``function`` in claim order, as its entry (entries of
        different functions compare in claim order too)."""
        q = self._functions.get(function)
        return q.ready[0] if q is not None and q.ready else None

    def head_level(self, function: str, limit: int) -> list[ReadyEntry]:
        """The first ``limit`` ready jobs of ``function`` at its highest waiting
        priority, in claim order: the window warm routing chooses from
        (genq.store.routing)."""
        q = self._functions.get(function)
        if q is None or not q.ready:
            return []
        top = q.ready[0][0]
        level: list[ReadyEntry] = []
        for entry in q.ready.islice(0, limit):
            if entry[0] != top:
                break
            level.append(entry)
        return level

    def position(self, job_id: str) -> int | None:
        """1 for the next job of its function; None when not queued or still delayed
        (a retry waiting out its delay has no place yet, as on Redis)."""
        queued = self._queued.get(job_id)
        if queued is None:
            return None
        ready = self._function(queued.function).ready
        entry = queued.entry(job_id)
        index: int = ready.bisect_left(entry)
        return index + 1 if index < len(ready) and ready[index] == entry else None

    def position_for(self, function: str, priority: int) -> int:
        """The position a job of ``priority`` would get if queued now: behind every
        ready job of equal or higher priority (as ``position`` counts)."""
        q = self._functions.get(function)
        return 1 if q is None else 1 + int(q.ready.bisect_left((-priority + 1,)))

    def depth(self, function: str) -> int:
        """Queued jobs of ``function``, ready or delayed."""
        q = self._functions.get(function)
        return 0 if q is None else q.depth

    def pop_expired(self, now: float) -> str | None:
        """The next job whose queue timeout passed by ``now``, taken off the expiry heap,
        or None. The entry may be stale (the job left the queue, or started once and
        was re-queued): the caller checks the job (rules.queue_timed_out)."""
        if self._expiry and self._expiry[0][0] <= now:
            return heapq.heappop(self._expiry)[1]
        return None
