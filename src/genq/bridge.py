"""Bridge a blocking sync iterator into async iteration without blocking the event loop.

The iterator runs in its own worker thread and puts items into a bounded buffer; the
async side takes everything that has accumulated in one go, so a fast producer costs
one loop wake-up per batch rather than per item. When the buffer is full the producer
blocks (backpressure). When the consumer stops early (cancelled, timed out, gone), the
producer is told at its next item and the generator is closed *in its own thread*, so
its ``finally`` blocks and context managers run where they were entered.

``iterate_in_thread`` is the public helper for people who only want this fix.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Generic, TypeVar

import anyio

from genq.errors import Cancelled

T = TypeVar("T")

DEFAULT_BUFFER = 1024


class _Done:
    """Marks the end of the stream (``value`` is a generator's return value)."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class SyncIteratorBridge(Generic[T]):
    """Runs ``iterable`` in a thread; ``batches()`` yields lists of items as they come."""

    def __init__(self, iterable: Iterable[T], *, buffer: int = DEFAULT_BUFFER) -> None:
        self._iterable = iterable
        self._buffer = max(1, buffer)
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._items: deque[T] = deque()
        self._done: _Done | None = None
        self._stopped: str | None = None  # the consumer has gone: why
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.return_value: Any = None

    def stop(self, reason: str = "consumer stopped") -> None:
        """Tell the producer to close the iterator at its next item. Thread-safe."""
        with self._lock:
            self._stopped = reason
            self._not_full.notify_all()

    async def batches(self) -> AsyncIterator[list[T]]:
        """Lists of items in order; re-raises the producer's exception at the end."""
        self._loop = asyncio.get_running_loop()
        # A thread of its own rather than a task group: an async generator must not hold a
        # cancel scope across ``yield``. A producer stuck inside next() cannot hold up
        # cancellation either: it is told to stop and exits at its next item.
        threading.Thread(target=self._produce, name="genq-sync-iterator", daemon=True).start()
        try:
            while True:
                batch, done = await self._take()
                if batch:
                    yield batch
                if done is not None:
                    if done.error is not None:
                        raise done.error
                    self.return_value = done.value
                    return
        finally:
            self.stop()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the producer to finish; True if it did."""
        with anyio.move_on_after(timeout):
            while True:
                with self._lock:
                    if self._done is not None:
                        return True
                    assert self._loop is not None
                    waiter = self._waiter = self._loop.create_future()
                await waiter
        return False

    async def _take(self) -> tuple[list[T], _Done | None]:
        while True:
            with self._lock:
                if self._items:
                    batch = list(self._items)
                    self._items.clear()
                    self._not_full.notify_all()
                    return batch, self._done
                if self._done is not None:
                    return [], self._done
                assert self._loop is not None
                waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        """Called with the lock held, from the producer thread."""
        waiter = self._waiter
        if waiter is not None and self._loop is not None:
            self._waiter = None
            try:
                self._loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:
                pass  # loop closed: nobody is listening any more

    def _produce(self) -> None:
        iterator: Iterator[T] = iter(self._iterable)
        done = _Done()
        try:
            while True:
                try:
                    item = next(iterator)
                except StopIteration as stop:
                    done.value = stop.value
                    break
                with self._lock:
                    while len(self._items) >= self._buffer and self._stopped is None:
                        self._not_full.wait()
                    if self._stopped is not None:
                        break
                    self._items.append(item)
                    self._wake()
        except Cancelled:
            pass  # raised by Progress after stop(): the consumer already knows why
        except BaseException as exc:  # re-raised on the consumer's side
            done.error = exc
        finally:
            close = getattr(iterator, "close", None)
            if self._stopped is not None and close is not None:
                try:
                    close()  # runs the generator's finally blocks in this thread
                except BaseException as exc:
                    done.error = done.error or exc
            with self._lock:
                self._done = done
                self._wake()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def iterate_in_thread(iterable: Iterable[T], *, buffer: int = DEFAULT_BUFFER
                            ) -> AsyncIterator[T]:
    """``async for item in iterate_in_thread(sync_gen())``: stream a blocking generator.

    The generator runs in a worker thread, the loop stays free, and breaking out of the
    ``async for`` (or cancelling it) closes the generator at its next item.
    """
    bridge = SyncIteratorBridge(iterable, buffer=buffer)
    batches = bridge.batches()
    try:
        async for batch in batches:
            for item in batch:
                yield item
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
