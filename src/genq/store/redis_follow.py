"""Live followers of job event streams on Redis: one blocking XREAD per process.

Every follower in a process (SSE streams, ``wait_terminal``) registers its job and
cursor here; one task holds one connection in ``XREAD BLOCK`` over all watched streams,
each from the lowest cursor of its followers, and fans the entries out in memory. When a
new stream or an earlier cursor joins, ``CLIENT UNBLOCK`` from another connection makes
the XREAD return at once, so it is re-issued with the new set: no polling, one Redis
connection however many followers there are, and a chunk reaches every follower of its
job in one read. A follower that falls too far behind (in events or in bytes) is cut
off and catches up by reading the stream itself (``Watch.overflowed``). Each read asks
for as many entries per stream as fit in ``READ_BYTES`` at the size of the largest entry
seen lately, and at most four times the last read's count, so a stream of 1 MB chunks is
read a few entries at a time, and a reply never holds a thousand of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genq.models import Event

log = logging.getLogger("genq.store.redis")

BLOCK_MS = 5_000  # a safety net only: changes of the watched set unblock the read at once
READ_COUNT = 1_000  # entries per stream per read, at most
READ_BYTES = 4 << 20  # ... and about this many bytes per stream per read
ROUND_GAP = 0.002  # s between reads that found data: each read re-sends every watched
# stream, so under a steady flow a read per event would cost more than the events; a
# 2 ms pause lets the flow gather into fewer, larger reads
MAX_BEHIND = 20_000  # events a follower may have undelivered before it must catch up
MAX_BEHIND_BYTES = 16 << 20  # ... or bytes of them

Decode = Callable[[str, Sequence[Any]], list[Event]]
StreamsReply = list[tuple[bytes, list[Any]]] | None


@dataclass(eq=False)
class Watch:
    """One follower's view: events after ``cursor`` land in ``pending``."""

    job_id: str
    cursor: int
    pending: list[Event] = field(default_factory=list)
    pending_bytes: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    closed: bool = False

    async def next_batch(self) -> list[Event] | None:
        """The events delivered since the last call; None once the hub stops watching
        (closed, or this follower overflowed and must catch up by reading)."""
        while not self.pending:
            if self.closed or self.overflowed:
                return None
            await self.ready.wait()
            self.ready.clear()
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        self.cursor = batch[-1].id
        return batch

    def deliver(self, events: list[Event]) -> None:
        fresh = [e for e in events if e.id > self.cursor
                 and (not self.pending or e.id > self.pending[-1].id)]
        if not fresh:
            return
        size = sum(e.size for e in fresh)
        if (len(self.pending) + len(fresh) > MAX_BEHIND
                or self.pending_bytes + size > MAX_BEHIND_BYTES):
            self.overflowed = True
            self.pending.clear()
            self.pending_bytes = 0
        else:
            self.pending.extend(fresh)
            self.pending_bytes += size
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class StreamHub:
    def __init__(self, make_connection: Callable[[], aioredis.Redis],
                 unblocker: aioredis.Redis, stream_key: Callable[[str], str],
                 decode: Decode) -> None:
        self._make_connection = make_connection
        self._unblocker = unblocker
        self._stream_key = stream_key
        self._decode = decode
        self._watches: dict[str, set[Watch]] = {}
        self._reading: dict[str, int] = {}  # job id -> cursor of the XREAD in flight
        self._changed = asyncio.Event()
        self._client_id: int | None = None
        self._blocked = False  # an XREAD is in flight
        self._generation = 0  # counts XREADs, so an unblock knows which one it is for
        self._unblocking = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._entry_size = 0  # bytes of the largest entry seen lately (halved per read)
        self._count = 1  # entries per stream the last read asked for

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="genq-redis-hub")

    async def close(self) -> None:
        self._closed = True
        for watches in self._watches.values():
            for watch in watches:
                watch.close()
        self._watches.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str, after: int) -> AsyncIterator[Watch]:
        watch = Watch(job_id, after)
        if self._closed:
            watch.close()
            yield watch
            return
        self._watches.setdefault(job_id, set()).add(watch)
        reading = self._reading.get(job_id)
        if reading is None or after < reading:
            await self._wake()
        try:
            yield watch
        finally:
            watches = self._watches.get(job_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[job_id]

    async def _wake(self) -> None:
        """Make the loop re-issue its XREAD with the current set of streams."""
        self._changed.set()
        if self._unblocking:
            return  # one unblock per burst of changes is enough
        self._unblocking = True
        try:
            generation = self._generation
            # The XREAD and the unblock travel on two connections: an unblock that
            # reaches Redis first finds nobody blocked (0), so it is sent again until
            # this read has returned.
            for _ in range(200):
                if not self._blocked or self._generation != generation:
                    return
                client_id = self._client_id
                if client_id is not None:
                    with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                        if await self._unblocker.client_unblock(client_id):
                            return
                await asyncio.sleep(0.002)
        finally:
            self._unblocking = False

    def _cursors(self) -> dict[str, int]:
        return {job_id: min(w.cursor if not w.pending else w.pending[-1].id for w in watches)
                for job_id, watches in self._watches.items() if watches}

    async def _run(self) -> None:
        conn: aioredis.Redis | None = None
        backoff = 0.05
        loop = asyncio.get_running_loop()
        found_at = -1.0
        try:
            while not self._closed:
                if not self._watches:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                pause = found_at + ROUND_GAP - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                try:
                    if conn is None:
                        conn = self._make_connection()
                        self._client_id = int(await conn.client_id())
                    self._changed.clear()
                    self._reading = self._cursors()
                    streams = {self._stream_key(job_id): f"0-{cursor}"
                               for job_id, cursor in self._reading.items()}
                    self._generation += 1
                    self._blocked = True
                    # Raw RESP2 reply (see RedisStore._connect): [[key, entries], ...]
                    self._count = max(1, min(READ_COUNT, 4 * self._count,
                                             READ_BYTES // max(1, self._entry_size)))
                    reply = cast(StreamsReply, await conn.xread(
                        streams, count=self._count, block=BLOCK_MS))  # type: ignore[arg-type]
                    self._blocked = False
                    backoff = 0.05
                    if reply:
                        found_at = loop.time()
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    self._blocked = False
                    log.warning("genq: following event streams failed (%s); retrying", exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.aclose()
                    conn, self._client_id = None, None
                    await asyncio.sleep(backoff)
                    backoff = min(2.0, backoff * 2)
                    continue
                self._entry_size //= 2
                for key, entries in reply or []:
                    job_id = key.decode().rsplit(":", 1)[1]
                    events = self._decode(job_id, entries)
                    largest = max((e.size for e in events), default=0)
                    self._entry_size = max(self._entry_size, largest)
                    for watch in list(self._watches.get(job_id, ())):
                        watch.deliver(events)
                    if events and events[-1].terminal:
                        for watch in self._watches.pop(job_id, set()):
                            watch.deliver([])
                            watch.close()
        finally:
            self._reading = {}
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.aclose()
