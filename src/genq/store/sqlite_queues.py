"""The SQLite store's queues in memory: which queued job runs next, and when.

The SQLite store answers claims, queue positions and depths from memory (the file is
only written to), so it keeps every queued job here, in three structures:

* **A ready list per function**, ordered by ``(-priority, fair tag, arrival)``: the
  head is the next claim, and a job's index is its queue position - 1. It is an
  order-statistic list (``SortedList``), so taking the head, cancelling any job and
  asking any job's position are each O(log n), where a heap would make the last two O(n).
* **A delayed heap** of ``(not_before, id)``: retries waiting out their backoff. They
  count in their function's depth (a full queue refuses submissions whatever the jobs
  wait for) but have no position until ``promote`` moves them to the ready list.
* **An expiry heap** of ``(expires_at, id)``: queued jobs with a queue timeout, oldest
  deadline first, for housekeeping.

**Fair share** (``fair=True``, the default): among jobs of one priority, owners take
turns. It is start-time fair queuing with a unit cost per job, kept in each job's sort
key rather than in sub-queues, so claim, cancel and position stay O(log n) and the
position is still an index: each (function, priority) level has a virtual time ``V``
(the start tag of the last job claimed there), and each owner with jobs queued at that
level the tag of its last one. A job queued by owner ``o`` gets the tag
``max(V, last[o]) + 1``: an owner with 500 jobs waiting holds tags up to ``V + 500``, and
a newcomer's first job gets ``V + 1``, so it runs next but for the jobs already tagged
``V + 1``. An owner whose jobs all left the level starts again from ``V`` (no credit
saved up while idle, no debt from cancelled jobs). Why tags rather than round robin over
owners' sub-queues: a position is then one rank in one sorted list, and the same key
works as a Redis sorted-set member (``redis_lua``), with no scan of owners per claim.
The cost of a job is one, whatever its run time: genq does not know durations before
they run. With ``fair=False`` every tag is 0: plain (priority, arrival) order.

Removal is lazy in the heaps: a job that leaves the queue (claimed, cancelled, expired)
is dropped from its ready list and from the index of queued jobs at once, and its heap
entries are skipped when they come up. Arrival order is a sequence number given at
each ``add``, so a retried job goes behind the jobs of its priority that are waiting.

Per-owner counts of queued jobs are kept too (``owner_depth``: the ``max_queued``
quota).

A plain class with no loop, file or clock of its own: the store passes ``now`` and
schedules its own wake-ups, so the ordering rules can be tested directly
(tests/test_sqlite_queues.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from sortedcontainers import SortedList

from genq.models import Job
from genq.store.routing import WINDOW

ReadyEntry = tuple[int, int, int, str]  # (-priority, fair tag, sequence number, job id)
JOB_ID: Final = 3  # where a ReadyEntry holds the job id


class _Queued(NamedTuple):
    function: str
    priority: int
    seq: int
    tag: int
    owner: str
    limited: bool  # its owner has a running quota (Job.owner_max_running)

    def entry(self, job_id: str) -> ReadyEntry:
        return (-self.priority, self.tag, self.seq, job_id)


@dataclass(slots=True)
class _Level:
    """Fair share at one (function, priority): virtual time, and per owner with jobs
    queued here the tag of its last job and how many it has."""

    vtime: int = 0
    last: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _FunctionQueue:
    ready: SortedList = field(default_factory=SortedList)  # of ReadyEntry, claim order
    depth: int = 0  # queued jobs: ready, or waiting for a retry delay


class JobQueues:
    """Every queued job of a store, by function: claim order, positions, depths, delays
    and queue timeouts."""

    def __init__(self, fair: bool = True) -> None:
        self.fair = fair
        self._functions: dict[str, _FunctionQueue] = {}
        self._levels: dict[tuple[str, int], _Level] = {}  # (function, priority) -> fairness
        self._owners: dict[str, int] = {}  # owner -> queued jobs (ready or delayed)
        self.limited = 0  # queued jobs with an owner_max_running: claims must check them
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
        """Queue ``job`` behind every job of its priority (under fair share: behind
        those with a smaller tag). Returns None when it is ready at once, else the
        seconds until its ``not_before`` (the caller wakes the workers then; ``promote``
        makes it ready)."""
        self._seq += 1
        level = self._levels.setdefault((job.function, job.priority), _Level())
        owned = level.count.get(job.owner, 0)
        tag = max(level.vtime, level.last[job.owner] if owned else 0) + 1
        level.count[job.owner] = owned + 1
        level.last[job.owner] = tag
        self._owners[job.owner] = self._owners.get(job.owner, 0) + 1
        limited = job.owner_max_running is not None
        self.limited += limited
        queued = self._queued[job.id] = _Queued(job.function, job.priority, self._seq,
                                                tag if self.fair else 0, job.owner, limited)
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
            self.limited -= queued.limited
            _leave(self._owners, queued.owner)
            level = self._levels[(queued.function, queued.priority)]
            if not _leave(level.count, queued.owner):
                del level.last[queued.owner]
                if not level.count:  # no one queued here: V restarts from 0, harmlessly
                    del self._levels[(queued.function, queued.priority)]

    def take(self, job_id: str) -> None:
        """Take a job out of the queue because a claim took it: its level's virtual
        time moves to its start tag (fair share's clock)."""
        queued = self._queued.get(job_id)
        if queued is not None:
            level = self._levels[(queued.function, queued.priority)]
            level.vtime = max(level.vtime, queued.tag - 1)
            self.remove(job_id)

    def promote(self, now: float) -> None:
        """Make the delayed jobs whose ``not_before`` has come ready."""
        while self._delayed and self._delayed[0][0] <= now:
            _, job_id = heapq.heappop(self._delayed)
            queued = self._queued.get(job_id)
            if queued is not None:
                ready = self._function(queued.function).ready
                if (entry := queued.entry(job_id)) not in ready:
                    ready.add(entry)

    def next_ready(self, functions: Iterable[str],
                   skip: Callable[[str], bool] | None = None) -> str | None:
        """The job a claim of ``functions`` takes: highest priority, then fair tag, then
        first queued, across the functions. It stays queued until ``take``."""
        best: ReadyEntry | None = None
        for function in functions:
            head = self.head(function, skip)
            if head is not None and (best is None or head < best):
                best = head
        return None if best is None else best[JOB_ID]

    def head(self, function: str,
             skip: Callable[[str], bool] | None = None) -> ReadyEntry | None:
        """The next ready job of ``function`` in claim order, as its entry (entries of
        different functions compare in claim order too). ``skip(job_id)``: jobs passed
        over (their owner is at its ``max_running``), looked for among the first
        ``WINDOW`` only, so a claim stays cheap whatever the depth."""
        q = self._functions.get(function)
        if q is None or not q.ready:
            return None
        if skip is None:
            return q.ready[0]  # type: ignore[no-any-return]
        return next((e for e in q.ready.islice(0, WINDOW) if not skip(e[JOB_ID])), None)

    def head_level(self, function: str, limit: int,
                   skip: Callable[[str], bool] | None = None) -> list[ReadyEntry]:
        """The ready jobs of ``function`` at its highest waiting priority among the
        first ``limit``, in claim order, without those ``skip`` passes over: the window
        warm routing chooses from (genq.store.routing)."""
        q = self._functions.get(function)
        if q is None or not q.ready:
            return []
        level: list[ReadyEntry] = []
        for entry in q.ready.islice(0, limit):
            if level and entry[0] != level[0][0]:
                break
            if skip is None or not skip(entry[JOB_ID]):
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

    def depth(self, function: str) -> int:
        """Queued jobs of ``function``, ready or delayed."""
        q = self._functions.get(function)
        return 0 if q is None else q.depth

    def owner_depth(self, owner: str) -> int:
        """Queued jobs of ``owner``, of every function, ready or delayed."""
        return self._owners.get(owner, 0)

    def pop_expired(self, now: float) -> str | None:
        """The next job whose queue timeout passed by ``now``, taken off the expiry heap,
        or None. The entry may be stale (the job left the queue, or started once and
        was re-queued): the caller checks the job (rules.queue_timed_out)."""
        if self._expiry and self._expiry[0][0] <= now:
            return heapq.heappop(self._expiry)[1]
        return None


def _leave(counts: dict[str, int], owner: str) -> int:
    """One job fewer for ``owner`` in ``counts`` (dropped at 0); what is left."""
    left = counts[owner] - 1
    if left:
        counts[owner] = left
    else:
        del counts[owner]
    return left
