"""``genq.Client``: the blocking twin of ``genq.AsyncClient``, run on an event loop in a
thread of its own.

Because genq's loop lives in its own thread (an anyio blocking portal), the sync client
works the same in a plain script, inside a running loop (a Jupyter cell, where
``asyncio.run`` would fail) and from many threads at once. Iterators cross threads once
per batch of events. ``with app.local() as client`` gives the same class, on the loop
its engine runs on.

The loop's thread (``LoopThread``) is a daemon and every way of closing it waits a bounded
time, so a client nobody closed never holds the interpreter open (issue 9).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from genq.client.async_client import AsyncClient, AsyncJob
from genq.client.transport import Transport
from genq.models import Event, JobInfo, JobStatus
from genq.paging import Before

T = TypeVar("T")

_WAKE = 0.2  # seconds between wake-ups of a thread blocked on the portal
CLOSE_TIMEOUT = 5.0  # seconds closing a client waits for its loop thread, at most


class LoopThread:
    """An event loop in a daemon thread, reached through an anyio blocking portal.

    Built on ``start_blocking_portal``, a client left open made its script hang at exit:
    nothing closed it, and an iterator left part way, finalized after the interpreter had
    frozen daemon threads, waited on the portal forever (``start_blocking_portal`` also
    joins its thread without a bound). Here the thread is a daemon, and
    ``stop`` (explicit, at garbage collection or at exit) cancels what still runs, closes
    async generators left part way (a stream's ``finally`` cancels its job), runs the
    ``cleanups`` (closing connections) and waits ``CLOSE_TIMEOUT`` s at most: a server
    that does not answer cannot hold the process open either.
    """

    def __init__(self, name: str) -> None:
        self.cleanups: list[Callable[[], Awaitable[object]]] = []
        # The async iterators behind the sync ones handed out (``iterate_batches``).
        self.iterators: weakref.WeakSet[AsyncIterator[Any]] = weakref.WeakSet()
        started: concurrent.futures.Future[BlockingPortal] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(started,), name=name,
                                        daemon=True)
        self._thread.start()
        self.portal = started.result()

    def _run(self, started: concurrent.futures.Future[BlockingPortal]) -> None:
        async def main() -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            async with BlockingPortal() as portal:
                started.set_result(portal)
                await self._stopping.wait()
                await portal.stop(cancel_remaining=True)  # refuses new calls at once
            # Every task the portal ran has ended; now the iterators callers dropped
            # midway, one by one while the connections are open (a stream cancels its
            # job), then any other generator, then the connections.
            for agen in list(self.iterators):
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            await self._loop.shutdown_asyncgens()
            for cleanup in self.cleanups:
                with contextlib.suppress(Exception):  # best effort: nobody to report to
                    await cleanup()

        try:
            anyio.run(main)
        except BaseException as exc:
            if started.done():
                raise
            started.set_exception(exc)

    def stop(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Ask the loop to wind down; wait ``timeout`` s at most. True once it has ended.

        Safe from any thread (garbage collection may run this on the loop thread itself,
        which then does not wait) and any number of times.
        """
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopping.set)
        if threading.get_ident() != self._thread.ident:
            self._thread.join(timeout)
        return not self._thread.is_alive()


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


def iterate_batches(portal: BlockingPortal, make: Callable[[], AsyncIterator[list[T]]],
                    opened: weakref.WeakSet[AsyncIterator[Any]] | None = None
                    ) -> Iterator[T]:
    """Drive an async iterator of batches from a sync thread, flattening the batches.

    ``opened`` records the async iterator, so that the loop can close it if this one is
    dropped unfinished and outlives the loop (``LoopThread``).
    """
    agen = make()
    if opened is not None:
        opened.add(agen)
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
    """Blocking twin of ``AsyncJob``. It keeps its client (and so the client's loop
    thread) alive: ``genq.Client(url).submit(...).result()`` works."""

    def __init__(self, client: Client, job: AsyncJob) -> None:
        self._client = client
        self._job = job
        self.id = job.id
        self.function = job.function
        self.reason = job.reason
        self.submitted = job.submitted
        self.ticket = job.ticket

    def __repr__(self) -> str:
        return f"<Job {self.function} {self.id}>"

    def info(self) -> JobInfo:
        return self._client._call(self._job.info)

    def events(self, after: int = 0) -> Iterator[Event]:
        """Every event after ``after``, live, ending with the terminal one."""
        return self._client._iterate(lambda: self._job.event_batches(after))

    def outputs(self) -> Iterator[Any]:
        """The job's decoded output chunks from its first, live, with a ``genq.Restart``
        where it started over (``AsyncJob.outputs``); leaving early leaves the job
        running."""
        return self._client._iterate(self._job.output_batches)

    def result(self, timeout: float | None = None) -> Any:
        return self._client._call(self._job.result, timeout)

    def cancel(self) -> JobInfo:
        return self._client._call(self._job.cancel)


class Client:
    """Blocking client: ``with genq.Client(url, api_key=...) as client``.

    ``genq.Client(url_or_transport, **options)`` takes what ``genq.AsyncClient`` takes
    and runs that client on an event loop in a daemon thread of its own, so it is safe in
    scripts, in Jupyter cells and from many threads; ``aio`` is that async client, for
    code that runs on its loop. Closing is best done with ``with`` or ``close()``; a
    client never closed is closed when garbage-collected or at interpreter exit, so a
    script never hangs on one (``LoopThread``).
    """

    def __init__(self, url: str | Transport, **options: Any) -> None:
        loop_thread = LoopThread("genq-client")

        async def build() -> AsyncClient:
            return AsyncClient(url, **options)

        try:
            aio = loop_thread.portal.call(build)
        except BaseException:
            loop_thread.stop()
            raise
        loop_thread.cleanups.append(aio.aclose)
        self._attach(loop_thread.portal, aio, loop_thread.iterators)
        # Runs once: on close(), when this client is garbage-collected or at exit. It
        # holds the thread, not the client, so it does not keep the client alive.
        self._closer: Callable[[], object] = weakref.finalize(self, loop_thread.stop)

    @classmethod
    def on_portal(cls, portal: BlockingPortal, aio: AsyncClient) -> Client:
        """A blocking client over ``aio``, which runs on ``portal``'s loop and belongs to
        whoever runs that loop (``app.local()``, whose engine shares it): ``close()``
        leaves both alone."""
        client = cls.__new__(cls)
        client._attach(portal, aio, None)
        client._closer = lambda: None
        return client

    def _attach(self, portal: BlockingPortal, aio: AsyncClient,
                opened: weakref.WeakSet[AsyncIterator[Any]] | None) -> None:
        self._portal = portal
        self.aio = aio  # the async client, for code that runs on the portal's loop
        self._opened = opened  # see iterate_batches

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop calls in flight, cancel jobs of streams left part way, close connections.

        Waits ``CLOSE_TIMEOUT`` (5) s at most; calling it again does nothing.
        """
        self._closer()

    @property
    def transport(self) -> Transport:
        return self.aio.transport

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        return call(self._portal, func, *args)

    def _iterate(self, make: Callable[[], AsyncIterator[list[T]]]) -> Iterator[T]:
        return iterate_batches(self._portal, make, self._opened)

    # -- the surface of AsyncClient, blocking -----------------------------------------
    def submit(self, function: str, inputs: Mapping[str, Any] | None = None, /, *,
               priority: int | None = None, idempotency_key: str | None = None,
               webhook: str | None = None, webhook_events: Sequence[str] | None = None,
               **kwargs: Any) -> Job:
        async def go() -> AsyncJob:
            return await self.aio.submit(function, inputs, priority=priority,
                                         idempotency_key=idempotency_key, webhook=webhook,
                                         webhook_events=webhook_events, **kwargs)

        return Job(self, self._call(go))

    def job(self, job_id: str) -> Job:
        """A handle on an existing job (no request is made)."""
        return Job(self, self.aio.job(job_id))

    def get(self, job_id: str) -> JobInfo:
        return self._call(self.aio.get, job_id)

    def cancel(self, job_id: str, *, ticket: str | None = None) -> JobInfo:
        """Cancel the job; with a submission's ``ticket``, only that submission lets go."""
        return self._call(functools.partial(self.aio.cancel, job_id, ticket=ticket))

    def list_jobs(self, *, function: str | None = None, status: str | JobStatus | None = None,
                  limit: int = 50, before: Before = None) -> list[JobInfo]:
        """My jobs, newest first; ``before=`` the last job of a page gives the next."""
        async def go() -> list[JobInfo]:
            return await self.aio.list_jobs(function=function, status=status, limit=limit,
                                            before=before)

        return self._call(go)

    def functions(self) -> list[dict[str, Any]]:
        return self._call(self.aio.functions)

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        return self._call(self.aio.result, job_id, timeout)

    def run(self, function: str, inputs: Mapping[str, Any] | None = None, /, *,
            timeout: float | None = None, **kwargs: Any) -> Any:
        return self.submit(function, inputs, **kwargs).result(timeout)

    def stream(self, function: str, inputs: Mapping[str, Any] | None = None, /,
               **kwargs: Any) -> Iterator[Any]:
        """Yield output chunks as produced, with a ``genq.Restart`` where the job started
        over (``AsyncClient.stream``); leaving early cancels the job."""
        data = {**(inputs or {}), **kwargs}
        return self._iterate(lambda: self.aio.stream_batches(function, data))

    def map(self, function: str, inputs: Iterable[Mapping[str, Any]], *,
            concurrency: int = 8, return_exceptions: bool = False) -> list[Any]:
        items = list(inputs)

        async def go() -> list[Any]:
            return await self.aio.map(function, items, concurrency=concurrency,
                                      return_exceptions=return_exceptions)

        return self._call(go)

    def decode(self, value: Any) -> Any:
        """A stored result or output chunk as ``result()`` returns it (AsyncClient.decode)."""
        return self._call(self.aio.decode, value)
