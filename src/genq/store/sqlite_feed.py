"""Live followers of the SQLite store: committed events handed out from memory.

Once the writer thread has committed a batch, the loop's ``_on_committed`` gives each
job's new events (as ``Event`` objects, decoded once) to ``FeedHub.publish``, which
appends them to the bounded buffer of every follower of that job in this process. A
follower reads the file only to catch up: at its start (``Last-Event-ID`` resume, or a
follow from the beginning) and after its buffer overflowed. N followers of a job cost
one decode per commit instead of N reads.

The handover from reading to the feed has no gap and no duplicate because a follower
subscribes *before* it reads: an event committed after the subscription arrives in the
feed, one committed before is in the read (or in both, when the commit landed in the
file before its ``_on_committed`` ran; ``Feed.take`` drops ids already yielded).

A follower that does not keep up cannot grow memory without bound: past ``limit``
undelivered events, or ``max_bytes`` of them (a few large chunks weigh more than many
tokens), its buffer is dropped and ``overflowed`` is set, and the follower goes back to
reading the file from its last id, in pages bounded by bytes, then to the feed again.
"""

from __future__ import annotations

import asyncio

from genq.models import Event

FOLLOW_BUFFER = 4_096  # undelivered events a follower may hold before it reads the file
FOLLOW_BUFFER_BYTES = 16 << 20  # ... and bytes of them


class Feed:
    """One follower's buffer of a job's committed events."""

    __slots__ = ("_bytes", "_events", "_limit", "_max_bytes", "_ready", "overflowed")

    def __init__(self, limit: int, max_bytes: int) -> None:
        self._events: list[Event] = []
        self._bytes = 0
        self._limit = limit
        self._max_bytes = max_bytes
        self._ready = asyncio.Event()
        self.overflowed = False

    def push(self, events: list[Event], size: int) -> None:
        """``events`` of ``size`` bytes in all."""
        if self.overflowed:
            return  # the follower reads the file anyway
        if (len(self._events) + len(events) > self._limit
                or self._bytes + size > self._max_bytes):
            self.lose()
            return
        self._events.extend(events)
        self._bytes += size
        self._ready.set()

    def lose(self) -> None:
        """Something was not delivered here: the follower must read the file."""
        self.overflowed = True
        self._events = []
        self._bytes = 0
        self._ready.set()

    def reset(self) -> None:
        """Start afresh; the caller reads the file right after, with no await between."""
        self.overflowed = False
        self._events = []
        self._bytes = 0

    def take(self, after: int) -> list[Event]:
        """Everything buffered with an id above ``after`` (the last id yielded)."""
        events, self._events = self._events, []
        self._bytes = 0
        if events and events[0].id <= after:
            events = [e for e in events if e.id > after]
        return events

    def wake(self) -> None:
        self._ready.set()

    async def wait(self) -> None:
        await self._ready.wait()
        self._ready.clear()


class FeedHub:
    """The followers of every job in this process, by job id."""

    def __init__(self, limit: int = FOLLOW_BUFFER,
                 max_bytes: int = FOLLOW_BUFFER_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self._feeds: dict[str, list[Feed]] = {}

    def subscribe(self, job_id: str) -> Feed:
        feed = Feed(self.limit, self.max_bytes)
        self._feeds.setdefault(job_id, []).append(feed)
        return feed

    def unsubscribe(self, job_id: str, feed: Feed) -> None:
        feeds = self._feeds.get(job_id)
        if feeds is not None and feed in feeds:
            feeds.remove(feed)
            if not feeds:
                del self._feeds[job_id]

    def wants(self, job_id: str) -> bool:
        return job_id in self._feeds

    def publish(self, job_id: str, events: list[Event], size: int) -> None:
        """A commit's ``events`` of the job, ``size`` bytes of data in all."""
        for feed in self._feeds.get(job_id, ()):
            feed.push(events, size)

    def lost(self, job_id: str) -> None:
        """A write of the job's events failed: its followers re-read the file."""
        for feed in self._feeds.get(job_id, ()):
            feed.lose()

    def wake_all(self) -> None:
        """The store is closing: every follower wakes and sees it."""
        for feeds in self._feeds.values():
            for feed in feeds:
                feed.wake()
