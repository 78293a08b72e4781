"""Live operations data: the combined job feed and the recent-activity statistics.

Both listen to ``store.subscribe_jobs`` (status changes only, never per chunk), so a
busy stream costs the dashboard nothing.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from genq.models import Job, JobStatus

WINDOW = 15 * 60.0  # seconds of finished jobs kept for latency and failure figures
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


class Activity:
    """Counts and latencies of recently finished jobs, per function."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._finished: deque[_Finished] = deque()
        self.totals: Counter[tuple[str, str, str]] = Counter()  # owner, function, status

    def observe(self, job: Job) -> None:
        if not job.status.terminal:
            return
        now = time.time()
        wait = None if job.started_at is None else max(0.0, job.started_at - job.created_at)
        run = (None if job.started_at is None or job.finished_at is None
               else max(0.0, job.finished_at - job.started_at))
        self._finished.append(_Finished(now, job.owner, job.function, job.status, wait, run))
        self.totals[(job.owner, job.function, job.status.value)] += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._finished and self._finished[0].at < now - self.window:
            self._finished.popleft()

    def summary(self, function: str, owner: str | None = None) -> dict[str, Any]:
        """Figures of ``function`` over every owner's jobs, or only ``owner``'s."""
        now = time.time()
        self._trim(now)
        mine = [f for f in self._finished
                if f.function == function and (owner is None or f.owner == owner)]
        runs = [f.run for f in mine if f.run is not None]
        latency = [f.run + f.wait for f in mine if f.run is not None and f.wait is not None]
        return {
            "throughput_per_min": sum(1 for f in mine if f.at >= now - 60),
            "failed_recent": sum(1 for f in mine if f.status is JobStatus.FAILED),
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
