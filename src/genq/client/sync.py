"""The blocking client: the async surface run on an event loop in a thread of its own.

Because genq's loop lives in its own thread (an anyio blocking portal), the sync client
works the same in a plain script, inside a running loop (a Jupyter cell, where
``asyncio.run`` would fail) and from many threads at once. Iterators cross threads once
per batch of events.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from genq.client.base import AsyncClientBase, AsyncJob
from genq.models import Event
from genq.models import Job as JobState

T = TypeVar("T")

_WAKE = 0.2  # seconds between wake-ups of a thread blocked on the portal


def wait(future: concurrent.futures.Future[T]) -> T:
    """``future.result()``, waking every ``_WAKE`` s so that Ctrl-C is always noticed.

    A signal that lands just as the main thread goes to sleep on a lock does not interrupt
    that sleep: without the wake-ups, KeyboardInterrupt would wait for the result, which
    for an idle event stream or a long job may never come.
    """
    while True:
        try:
            return future.result(timeout=_WAKE)
        except TimeoutError:
            if future.done():  # the call itself raised a TimeoutError (ResultTimeout)
                return future.result()


def call(portal: BlockingPortal, func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``portal.call(func, *args)`` that an interruption (Ctrl-C) also cancels on the loop."""
    future = portal.start_task_soon(func, *args)
    try:
        return wait(future)
    except BaseException:
        future.cancel()
        raise


def iterate_batches(portal: BlockingPortal,
                    make: Callable[[], AsyncIterator[list[T]]]) -> Iterator[T]:
    """Drive an async iterator of batches from a sync thread, flattening the batches."""
    agen = make()
    running: list[anyio.CancelScope] = []  # the step in progress on the portal's loop
    stepped = threading.Event()  # set when the latest step has returned

    async def step() -> list[T] | None:
        try:
            with anyio.CancelScope() as scope:
                running.append(scope)
                try:
                    return await agen.__anext__()
                except StopAsyncIteration:
                    return None
            return None  # cancelled by ``abandon``
        finally:
            running.clear()
            stepped.set()

    async def abandon() -> None:
        # Callbacks run in order on the loop, so a step this thread has started is
        # running by now (and is cancelled) or has returned.
        if running:
            running[0].cancel()
        else:
            stepped.set()

    try:
        while True:
            stepped.clear()
            try:
                batch = wait(portal.start_task_soon(step))
            except BaseException:
                # Interrupted while waiting (Ctrl-C raises KeyboardInterrupt here): stop the
                # step still running on the loop and let it unwind, so that closing the
                # generator below does not find it "already running".
                if not stepped.is_set():
                    with contextlib.suppress(RuntimeError):
                        portal.call(abandon)
                        stepped.wait(10.0)
                raise
            if batch is None:
                break
            yield from batch
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            # RuntimeError: the portal has stopped (this iterator outlived its client), and
            # its loop already finalized the async generator on the way out.
            with contextlib.suppress(RuntimeError):
                portal.call(aclose)


class Job:
    """Blocking twin of ``AsyncJob``."""

    def __init__(self, portal: BlockingPortal, job: AsyncJob) -> None:
        self._portal = portal
        self._job = job
        self.id = job.id
        self.function = job.function
        self.reason = job.reason

    def __repr__(self) -> str:
        return f"<Job {self.function} {self.id}>"

    def info(self) -> JobState:
        return call(self._portal, self._job.info)

    def events(self, after: int = 0) -> Iterator[Event]:
        client = self._job._client
        return iterate_batches(self._portal, lambda: client._follow(self.id, after))

    def result(self, timeout: float | None = None) -> Any:
        return call(self._portal, self._job.result, timeout)

    def cancel(self) -> JobState:
        return call(self._portal, self._job.cancel)


class SyncClient:
    """Blocking twin of an async client, bound to the portal whose loop runs it."""

    def __init__(self, portal: BlockingPortal, client: AsyncClientBase) -> None:
        self._portal = portal
        self.aio = client  # the async client, for code that runs on the portal's loop

    def submit(self, function: str, inputs: Mapping[str, Any] | None = None, /, *,
               priority: int | None = None, idempotency_key: str | None = None,
               **kwargs: Any) -> Job:
        async def go() -> AsyncJob:
            return await self.aio.submit(function, inputs, priority=priority,
                                         idempotency_key=idempotency_key, **kwargs)

        return Job(self._portal, call(self._portal, go))

    def job(self, job_id: str) -> Job:
        return Job(self._portal, self.aio.job(job_id))

    def get(self, job_id: str) -> JobState:
        return call(self._portal, self.aio.get, job_id)

    def cancel(self, job_id: str) -> JobState:
        return call(self._portal, self.aio.cancel, job_id)

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        return call(self._portal, self.aio.result, job_id, timeout)

    def run(self, function: str, inputs: Mapping[str, Any] | None = None, /, *,
            timeout: float | None = None, **kwargs: Any) -> Any:
        return self.submit(function, inputs, **kwargs).result(timeout)

    def stream(self, function: str, inputs: Mapping[str, Any] | None = None, /,
               **kwargs: Any) -> Iterator[Any]:
        """Yield output chunks as produced; leaving early cancels the job."""
        data = {**(inputs or {}), **kwargs}
        return iterate_batches(self._portal,
                               lambda: self.aio._stream_batches(function, data))

    def map(self, function: str, inputs: Iterable[Mapping[str, Any]], *,
            concurrency: int = 8, return_exceptions: bool = False) -> list[Any]:
        items = list(inputs)

        async def go() -> list[Any]:
            return await self.aio.map(function, items, concurrency=concurrency,
                                      return_exceptions=return_exceptions)

        return call(self._portal, go)
