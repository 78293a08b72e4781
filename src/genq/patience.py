"""How a worker's writes wait out a store outage, however long.

A store call gives up after its own retry window (Redis: ``retry_for``; then, its circuit
open, it answers ``StoreUnavailable`` at once), which is right for an API request: the
caller is told and retries. A running job's writes (its events, its artifacts, how it
ended) have nobody to tell, and dropping them would leave a hole in a log that promises
every event. So the worker retries them here, with backoff, until the store answers.
Repeating them is safe: an append carries the event id it must start at, and ``finish``,
``retry`` and ``requeue`` find their change already made, each fenced by the job's lease.

Patience ends only when the worker gives up (``give_up``: shutdown past its grace
period); the waiting writes then fail, and their jobs are reclaimed when their leases
lapse, as after a crash. One ``Patience`` per worker, so an outage is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from genq.errors import StoreUnavailable

T = TypeVar("T")

MAX_DELAY = 1.0  # seconds between tries, at most

log = logging.getLogger("genq.worker")


class Patience:
    def __init__(self, name: str = "genq worker") -> None:
        self._name = name  # who waits, for the log
        self._given_up = asyncio.Event()
        self._down_since: float | None = None  # monotonic, while the store is away

    def give_up(self) -> None:
        """From now on, writes fail with StoreUnavailable as the store itself says."""
        self._given_up.set()

    async def until_stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """``write()``, again and again while the store is unavailable."""
        delay = 0.05
        while True:
            try:
                result = await write()
            except StoreUnavailable:
                if self._given_up.is_set():
                    raise
                self.unavailable()
                with anyio.move_on_after(delay):
                    await self._given_up.wait()
                delay = min(MAX_DELAY, delay * 2)
            else:
                self.answered()
                return result

    def unavailable(self) -> None:
        """The store did not answer (a write here, or the worker's claim or maintenance
        loop): said once per outage."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("%s: the store is unavailable; running jobs go on and their "
                        "writes wait for it", self._name)

    def answered(self) -> None:
        if self._down_since is not None:
            log.warning("%s: the store answers again, after %.1f s away", self._name,
                        time.monotonic() - self._down_since)
            self._down_since = None
