"""Buffered, ordered writing of one running job's events to the store.

Progress and log callbacks arrive as plain calls on the loop; output chunks arrive in
batches from the executor. All of them go through one buffer drained by one flusher at
a time, so the log keeps exactly the order in which things happened while a burst costs
one store call. Every write carries the run's lease; once the store refuses it (the job
was reclaimed), the log says so through ``on_lost`` and drops everything after.

A store outage loses nothing. A batch the store did not take is sent again, the very
same batch (the store knows a batch it already applied by the event id it starts at),
until the store answers (``genq.patience``); new events queue behind it meanwhile. The
queue is bounded by bytes (``MAX_PENDING_BYTES`` per job, counted as each event's data
plus ``EVENT_OVERHEAD``): past the bound the job's producer waits in ``add_many`` until
the store has taken the queue, so a generator pauses rather than lose a chunk or grow
without bound. Progress and log events (``add``) are queued whatever the bound, since
their callers cannot wait: progress is coalesced to a few events a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from genq.errors import LeaseLost
from genq.jsoncodec import compact_json
from genq.models import EventType, Lease
from genq.patience import Patience
from genq.store.base import NewEvent, Store

MAX_PENDING_BYTES = 1 << 20  # per job: queued past this, output producers wait
EVENT_OVERHEAD = 256  # bytes counted per event besides its data: Python's own objects


def event_bytes(data: dict[str, Any]) -> int:
    """What one queued event counts against the bound; a text chunk costs no encoding."""
    chunk = data.get("chunk")
    if type(chunk) is str and len(data) == 1:
        return EVENT_OVERHEAD + (len(chunk) if chunk.isascii() else len(chunk.encode()))
    return EVENT_OVERHEAD + len(compact_json(data))


class JobLog:
    def __init__(self, store: Store, job_id: str, lease: Lease,
                 on_lost: Callable[[], None] | None = None, *,
                 patience: Patience | None = None,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self._store = store
        self._job_id = job_id
        self._lease = lease
        self._on_lost = on_lost
        self._patience = patience or Patience()
        self._max_pending_bytes = max_pending_bytes
        self._lost: LeaseLost | None = None
        self._pending: list[NewEvent] = []
        self._pending_bytes = 0  # of the queued events and the batch being written
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def add(self, etype: EventType, data: dict[str, Any]) -> None:
        """Queue one event (call on the loop). Written soon, in order."""
        if self._lost is not None:
            return
        self._queue([(etype, data)])
        self._flush_soon()

    async def add_many(self, events: list[NewEvent]) -> None:
        """Queue several events; past the byte bound, waits until the store has taken
        them (through an outage too). Raises LeaseLost once the job was taken from
        this run."""
        self._raise_if_lost()
        self._queue(events)
        if self._pending_bytes >= self._max_pending_bytes:
            await self._flush()
            self._raise_if_lost()
        else:
            self._flush_soon()

    async def drain(self) -> None:
        """Write everything queued so far; raises LeaseLost, or StoreUnavailable once the
        worker gave up waiting for the store (the events stay queued)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await flusher
        elif not self._pending and not self._lock.locked():
            # Nothing queued and no write in progress: the common case, no lock.
            self._raise_if_lost()
            return
        await self._flush()
        self._raise_if_lost()

    def _queue(self, events: list[NewEvent]) -> None:
        self._pending.extend(events)
        self._pending_bytes += sum(event_bytes(data) for _, data in events)

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        """The flusher task: a write that failed leaves its events queued for ``drain``
        (or the next flush) to try again, and no exception in a task nobody awaits."""
        with contextlib.suppress(Exception):  # drain() meets it again, and raises it
            await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            while self._pending and self._lost is None:
                batch, self._pending = self._pending, []
                size = self._pending_bytes
                write = functools.partial(self._store.append_events, self._job_id, batch,
                                          self._lease)
                try:
                    await self._patience.until_stored(write)
                except LeaseLost as lost:
                    self._lost = lost
                    self._pending.clear()
                    self._pending_bytes = 0
                    if self._on_lost is not None:
                        self._on_lost()
                except BaseException:
                    self._pending[:0] = batch  # kept, in order, for the next try
                    raise
                else:
                    self._pending_bytes -= size
