"""Bridge a blocking sync iterator into async iteration without blocking the event loop.

The iterator runs in its own worker thread and puts items into a bounded buffer; the
async side takes everything that has accumulated in one go, so a fast producer costs
one loop wake-up per batch rather than per item. When the buffer is full the producer
blocks (backpressure): full at ``buffer`` items or, with ``weigh``, at ``max_bytes``
(always room for one item, however large). When the consumer stops early (cancelled,
timed out, gone), the producer is told at its next item and the generator is closed
*in its own thread*, so its ``finally`` blocks and context managers run where they
were entered.

``iterate_in_thread`` is the public helper for people who only want this fix.
"""

from __future__ import annotations

import _thread
import asyncio
import queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
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

    def __init__(self, iterable: Iterable[T], *, buffer: int = DEFAULT_BUFFER,
                 weigh: Callable[[T], int] | None = None, max_bytes: int = 0) -> None:
        self._iterable = iterable
        self._buffer = max(1, buffer)
        self._weigh = weigh  # an item's size in bytes, weighed in the producer's thread
        self._max_bytes = max_bytes
        self._held = 0  # bytes of the items in the buffer
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._items: deque[T] = deque()
        self._done: _Done | None = None
        self._stopped: str | None = None  # the consumer has gone: why
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waker: _LoopWaker | None = None
        self.return_value: Any = None

    def stop(self, reason: str = "consumer stopped") -> None:
        """Tell the producer to close the iterator at its next item. Thread-safe."""
        with self._lock:
            self._stopped = reason
            self._not_full.notify_all()

    async def batches(self) -> AsyncIterator[list[T]]:
        """Lists of items in order; re-raises the producer's exception at the end."""
        self._loop = asyncio.get_running_loop()
        self._waker = _waker_of(self._loop)
        # A thread of its own rather than a task group: an async generator must not hold a
        # cancel scope across ``yield``. A producer stuck inside next() cannot hold up
        # cancellation either: it is told to stop and exits at its next item.
        start_producer(self._produce)
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
                    self._held = 0
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
        if waiter is not None and self._waker is not None:
            self._waiter = None
            self._waker.wake(waiter)

    def _full(self) -> bool:
        """Called with the lock held: no room for another item."""
        return len(self._items) >= self._buffer or (
            self._weigh is not None and bool(self._items) and self._held >= self._max_bytes)

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
                size = 0 if self._weigh is None else self._weigh(item)
                with self._lock:
                    while self._full() and self._stopped is None:
                        self._not_full.wait()
                    if self._stopped is not None:
                        break
                    self._items.append(item)
                    self._held += size
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


class _ProducerThreads:
    """Threads for the producers: reused when idle, started without making the loop wait.

    ``threading.Thread.start()`` blocks until the new thread has run, which needs the
    GIL: with hundreds of generator threads busy that cost the loop about 2 ms per job,
    and 250 sync-generator jobs submitted at once got their first token 0.5 s late
    (bench/bench_scale.py). ``_thread.start_new_thread`` returns at once, and a thread
    that finished a producer waits a while for the next one (the steady state of a busy
    server starts none). Like daemon threads, they never hold up interpreter exit.
    """

    IDLE = 30.0  # seconds an idle thread waits for the next producer before it exits

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def run(self, target: Callable[[], None]) -> None:
        with self._lock:
            self._work.put(target)
            if self._idle > 0:
                self._idle -= 1
                return
        _thread.start_new_thread(self._serve, ())

    def _serve(self) -> None:
        while True:
            try:
                target = self._work.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    # Leave unless a producer was handed to this thread meanwhile.
                    if self._idle > 0 and self._work.empty():
                        self._idle -= 1
                        return
                continue
            target()  # never raises: _produce hands every error to its consumer
            with self._lock:
                self._idle += 1


start_producer = _ProducerThreads().run


class _LoopWaker:
    """Wakes consumers on one loop from producer threads, one loop wake-up for all.

    With 250 generators each handing over 100 items a second, a ``call_soon_threadsafe``
    per item meant 25,000 self-pipe writes a second and as many loop wake-ups; waiters
    woken while a wake-up is pending ride along with it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[asyncio.Future[None]] = []

    def wake(self, waiter: asyncio.Future[None]) -> None:
        with self._lock:
            self._pending.append(waiter)
            if len(self._pending) > 1:
                return  # a wake-up is on its way
        try:
            self._loop.call_soon_threadsafe(self._resolve_all)
        except RuntimeError:
            pass  # loop closed: nobody is listening any more

    def _resolve_all(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for waiter in pending:
            if not waiter.done():
                waiter.set_result(None)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
    weakref.WeakKeyDictionary())
_wakers_lock = threading.Lock()


def _waker_of(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    with _wakers_lock:
        waker = _wakers.get(loop)
        if waker is None:
            waker = _wakers[loop] = _LoopWaker(loop)
        return waker


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
