"""Live operations data: the combined job feed and the recent-activity statistics.

Both listen to ``store.subscribe_jobs`` (status changes only, never per chunk), so a
busy stream costs the dashboard nothing. Neither grows with the number of jobs: the
activity figures count finished jobs per second (a window of 900 counters at most) and
keep only the latest ``RECENT`` finished jobs for the percentiles, so a server running
a hundred jobs a second holds the same memory after an hour as after a minute.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from genq.models import Job, JobStatus

WINDOW = 15 * 60.0  # seconds of finished jobs kept for latency and failure figures
RECENT = 10_000  # finished jobs kept for the percentiles (the latest, within WINDOW)
FEED_BUFFER = 1000  # updates a slow feed subscriber may fall behind before a resync


@dataclass(frozen=True, slots=True)
class _Finished:
    at: float
    owner: str
    function: str
    status: JobStatus
    wait: float | None
    run: float | None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


Tally = Counter[tuple[str, str, JobStatus]]  # (owner, function, status) -> jobs


class Activity:
    """Counts and latencies of recently finished jobs, per function."""

    def __init__(self, window: float = WINDOW, recent: int = RECENT) -> None:
        self.window = window
        # The latest finished jobs, for run and latency percentiles: a sample of the
        # window's jobs when more than ``recent`` finished in it.
        self._finished: deque[_Finished] = deque(maxlen=recent)
        self._seconds: deque[tuple[int, Tally]] = deque()  # jobs finished per second
        self.totals: Counter[tuple[str, str, str]] = Counter()  # owner, function, status

    def observe(self, job: Job) -> None:
        if not job.status.terminal:
            return
        now = time.time()
        wait = None if job.started_at is None else max(0.0, job.started_at - job.created_at)
        run = (None if job.started_at is None or job.finished_at is None
               else max(0.0, job.finished_at - job.started_at))
        # Interned: a job's names are strings of its request; kept, they would each
        # hold a copy. Both come from a bounded set (API keys' owners, functions).
        owner, function = sys.intern(job.owner), sys.intern(job.function)
        self._finished.append(_Finished(now, owner, function, job.status, wait, run))
        second = int(now)
        if not self._seconds or self._seconds[-1][0] != second:
            self._seconds.append((second, Counter()))
        self._seconds[-1][1][(owner, function, job.status)] += 1
        self.totals[(owner, function, job.status.value)] += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._finished and self._finished[0].at < now - self.window:
            self._finished.popleft()
        while self._seconds and self._seconds[0][0] < now - self.window:
            self._seconds.popleft()

    def _count(self, function: str, owner: str | None, since: float,
               status: JobStatus | None = None) -> int:
        return sum(n for second, tally in self._seconds if second >= since
                   for (who, fn, st), n in tally.items()
                   if fn == function and owner in (None, who) and status in (None, st))

    def summary(self, function: str, owner: str | None = None) -> dict[str, Any]:
        """Figures of ``function`` over every owner's jobs, or only ``owner``'s."""
        now = time.time()
        self._trim(now)
        mine = [f for f in self._finished
                if f.function == function and (owner is None or f.owner == owner)]
        runs = [f.run for f in mine if f.run is not None]
        latency = [f.run + f.wait for f in mine if f.run is not None and f.wait is not None]
        return {
            "throughput_per_min": self._count(function, owner, now - 60),
            "failed_recent": self._count(function, owner, now - self.window,
                                         JobStatus.FAILED),
            "run_p50": _percentile(runs, 0.5), "run_p95": _percentile(runs, 0.95),
            "latency_p50": _percentile(latency, 0.5), "latency_p95": _percentile(latency, 0.95),
            "totals": self._totals(function, owner),
        }

    def _totals(self, function: str, owner: str | None) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (who, fn, status), n in self.totals.items():
            if fn == function and owner in (None, who):
                totals[status] += n
        return dict(totals)


class JobFeed:
    """Fan-out of job status changes to connected dashboards, each with a bounded buffer."""

    def __init__(self) -> None:
        self._subscribers: dict[int, tuple[str, MemoryObjectSendStream[Job]]] = {}
        self._next = 0

    def publish(self, job: Job) -> None:
        for key, (owner, send) in list(self._subscribers.items()):
            if job.owner != owner:
                continue
            try:
                send.send_nowait(job)
            except anyio.WouldBlock:  # too slow: end its feed; it reconnects and resyncs
                send.close()
                del self._subscribers[key]

    def subscribe(self, owner: str) -> tuple[MemoryObjectReceiveStream[Job], Callable[[], None]]:
        send, receive = anyio.create_memory_object_stream[Job](FEED_BUFFER)
        key = self._next
        self._next += 1
        self._subscribers[key] = (owner, send)

        def unsubscribe() -> None:
            entry = self._subscribers.pop(key, None)
            if entry is not None:
                entry[1].close()
            receive.close()

        return receive, unsubscribe

    async def follow(self, owner: str) -> AsyncIterator[Job]:
        receive, unsubscribe = self.subscribe(owner)
        try:
            async for job in receive:
                yield job
        finally:
            unsubscribe()
