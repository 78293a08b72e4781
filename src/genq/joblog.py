"""Buffered, ordered writing of one running job's events to the store.

Progress and log callbacks arrive as plain calls on the loop; output chunks arrive in
batches from the executor. All of them go through one buffer drained by one flusher at
a time, so the log keeps exactly the order in which things happened while a burst costs
one store call. Every write carries the run's lease; once the store refuses it (the job
was reclaimed), the log says so through ``on_lost`` and drops everything after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from genq.errors import LeaseLost
from genq.models import EventType, Lease
from genq.store.base import NewEvent, Store

_DRAIN_ABOVE = 8192  # pending events at which producers wait for the store


class JobLog:
    def __init__(self, store: Store, job_id: str, lease: Lease,
                 on_lost: Callable[[], None] | None = None) -> None:
        self._store = store
        self._job_id = job_id
        self._lease = lease
        self._on_lost = on_lost
        self._lost: LeaseLost | None = None
        self._pending: list[NewEvent] = []
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def add(self, etype: EventType, data: dict[str, Any]) -> None:
        """Queue one event (call on the loop). Written soon, in order."""
        if self._lost is not None:
            return
        self._pending.append((etype, data))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def add_many(self, events: list[NewEvent]) -> None:
        """Queue several events; waits for the store when too many are pending. Raises
        LeaseLost once the job was taken from this run."""
        self._raise_if_lost()
        self._pending.extend(events)
        if len(self._pending) >= _DRAIN_ABOVE:
            await self._flush()
            self._raise_if_lost()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def drain(self) -> None:
        """Write everything queued so far; re-raises a store failure or LeaseLost."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await flusher
        elif not self._pending and not self._lock.locked():
            # Nothing queued and no write in progress: the common case, no lock.
            self._raise_if_lost()
            return
        await self._flush()
        self._raise_if_lost()

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    async def _flush(self) -> None:
        async with self._lock:
            while self._pending and self._lost is None:
                batch, self._pending = self._pending, []
                try:
                    await self._store.append_events(self._job_id, batch, self._lease)
                except LeaseLost as lost:
                    self._lost = lost
                    self._pending.clear()
                    if self._on_lost is not None:
                        self._on_lost()
