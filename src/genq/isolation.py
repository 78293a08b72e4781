"""``@app.function(isolate=True)``: an ``async def`` function or generator run on an event
loop of its own, in a thread, instead of on the loop that serves every request.

For async code that calls blocking code (a sync streamer wrapped in an ``async def``
generator, a CPU-bound step without ``await``): on the shared loop each of its blocking
steps stalls every other stream and request of the process; isolated, it stalls only its
own loop. The coroutine keeps its async shape (its awaits still interleave on its loop),
but objects it shares with the main loop (an ``asyncio.Lock`` made there, an httpx
client opened there) must not be used from it, which is why this is opted into.

An isolated generator becomes a plain sync generator that steps the async one on its
private loop; the executor then streams it like any sync generator (a worker thread, a
bounded buffer, its ``finally`` run when the consumer stops). An isolated coroutine runs
with ``asyncio.run`` semantics in a worker thread and is cancelled on its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class IsolatedCoroutine:
    """One coroutine on a loop of its own: ``run`` (in a thread) returns its result;
    ``cancel`` (from any thread) cancels it the asyncio way, on that loop."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def run(self) -> Any:
        with asyncio.Runner() as runner:
            loop = runner.get_loop()
            with self._lock:
                if self._cancelled:
                    self._coro.close()
                    raise asyncio.CancelledError
                self._loop, self._task = loop, loop.create_task(self._coro)
            try:
                return loop.run_until_complete(self._task)
            finally:
                with self._lock:
                    self._loop = self._task = None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._loop is not None and self._task is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self._task.cancel)


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def iterate_isolated(agen: AsyncIterator[T]) -> Iterator[T]:
    """Step ``agen`` on a loop of its own; close it there when this generator is closed
    (the consumer stopped) or ends."""
    with asyncio.Runner() as runner:
        try:
            while True:
                try:
                    item = runner.run(_next(agen))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                runner.run(aclose())
