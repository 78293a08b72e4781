"""Live operations data: the combined job feed and the recent-activity statistics.

The feed listens to ``store.subscribe_jobs`` (status changes only, never per chunk), so
a busy stream costs the dashboard nothing. The activity figures are read from the store
(``Store.finished_stats``): totals the store counts as each job ends, and the latest
``RECENT`` jobs finished within ``WINDOW`` for throughput, failures and percentiles. So a
restarted server, or another front end of the same store, shows the same figures, and
their cost is bounded by ``RECENT`` whatever the number of jobs stored; one read serves
every request for ``MAX_AGE`` seconds.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from genq.models import Job, JobStatus
from genq.store.base import FinishedStats, Store

WINDOW = 15 * 60.0  # seconds of finished jobs read for throughput, failures and latency
RECENT = 2_000  # at most this many of them (the latest): the percentiles' sample
MAX_AGE = 1.0  # seconds one read of the store serves
FEED_BUFFER = 1000  # updates a slow feed subscriber may fall behind before a resync


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class Activity:
    """Counts and latencies of finished jobs per function, as the store has them."""

    def __init__(self, store: Store, window: float = WINDOW, recent: int = RECENT,
                 max_age: float = MAX_AGE) -> None:
        self.store = store
        self.window = window
        self.recent = recent
        self.max_age = max_age
        self._read: tuple[float, FinishedStats] | None = None
        self._lock = anyio.Lock()  # concurrent requests share one read

    async def _stats(self) -> FinishedStats:
        async with self._lock:
            now = time.time()
            if self._read is None or now - self._read[0] >= self.max_age:
                self._read = (now, await self.store.finished_stats(now - self.window,
                                                                   self.recent))
            return self._read[1]

    async def summaries(self, functions: Iterable[str],
                        owner: str | None = None) -> dict[str, dict[str, Any]]:
        """Figures of each function over every owner's jobs, or only ``owner``'s."""
        stats = await self._stats()
        now = time.time()
        return {name: _summary(stats, name, owner, now, self.window) for name in functions}


def _summary(stats: FinishedStats, function: str, owner: str | None, now: float,
             window: float) -> dict[str, Any]:
    mine = [f for f in stats.recent if f.function == function
            and (owner is None or f.owner == owner) and f.finished_at >= now - window]
    ran = [f for f in mine if f.started_at is not None]
    runs = [max(0.0, f.finished_at - f.started_at) for f in ran if f.started_at is not None]
    latency = [max(0.0, f.finished_at - f.created_at) for f in ran]
    totals: Counter[str] = Counter()
    for (who, fn, status), n in stats.totals.items():
        if fn == function and owner in (None, who):
            totals[status] += n
    return {
        "throughput_per_min": sum(1 for f in mine if f.finished_at >= now - 60),
        "failed_recent": sum(1 for f in mine if f.status is JobStatus.FAILED),
        "run_p50": _percentile(runs, 0.5), "run_p95": _percentile(runs, 0.95),
        "latency_p50": _percentile(latency, 0.5), "latency_p95": _percentile(latency, 0.95),
        "totals": dict(totals),
    }


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
