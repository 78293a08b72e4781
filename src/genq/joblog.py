"""Buffered, ordered writing of one running job's events to the store.

Progress and log callbacks arrive as plain calls on the loop; output chunks arrive in
batches from the executor. All of them go through one buffer drained by one flusher at
a time, so the log keeps exactly the order in which things happened while a burst costs
one store call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from genq.models import EventType
from genq.store.base import NewEvent, Store

_DRAIN_ABOVE = 8192  # pending events at which producers wait for the store


class JobLog:
    def __init__(self, store: Store, job_id: str) -> None:
        self._store = store
        self._job_id = job_id
        self._pending: list[NewEvent] = []
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def add(self, etype: EventType, data: dict[str, Any]) -> None:
        """Queue one event (call on the loop). Written soon, in order."""
        self._pending.append((etype, data))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def add_many(self, events: list[NewEvent]) -> None:
        """Queue several events; waits for the store when too many are pending."""
        self._pending.extend(events)
        if len(self._pending) >= _DRAIN_ABOVE:
            await self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def drain(self) -> None:
        """Write everything queued so far; re-raises a store failure."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await flusher
        elif not self._pending and not self._lock.locked():
            return  # nothing queued and no write in progress: the common case, no lock
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._store.append_events(self._job_id, batch)
