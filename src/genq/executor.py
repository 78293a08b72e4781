"""Runs one call of a registered function, whatever its kind, without blocking the loop.

* ``def``: in a worker thread (abandoned on cancel; it stops at its next Progress call).
* ``async def``: awaited on the loop; cancelled the asyncio way.
* generator: iterated in a thread through ``SyncIteratorBridge`` (bounded buffer, closed
  in its own thread when the consumer stops).
* async generator: iterated on the loop and ``aclose``d when the consumer stops.

Output chunks are handed to ``emit`` in batches, as they are produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from genq import loopshare
from genq.bridge import SyncIteratorBridge
from genq.functions import FunctionSpec, Kind
from genq.isolation import IsolatedCoroutine, iterate_isolated
from genq.progress import Progress

Emit = Callable[[list[Any]], Awaitable[list[Any]]]  # returns the chunks as stored

CLOSE_GRACE = 5.0  # seconds a stopped sync generator gets to run its finally blocks
_FREE = contextlib.nullcontext()  # the step of a generator not known to block


class ThreadWatch:
    """Whether a sync function's call is still running in its worker thread.

    Cancellation and timeouts abandon that thread (Python cannot stop it) so the job ends
    at once; but the code may still hold the GPU, so whoever limits concurrency asks
    ``after_exit`` to learn when the thread really returns.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._on_exit: Callable[[], None] | None = None

    def wrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with self._lock:
                self._running = True
            try:
                return fn()
            finally:
                with self._lock:
                    self._running = False
                    on_exit, self._on_exit = self._on_exit, None
                if on_exit is not None:
                    on_exit()

        return call

    def after_exit(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` (in the thread) when the call returns and answer True; or
        answer False if it is not running, without calling ``callback``."""
        with self._lock:
            if not self._running:
                return False
            self._on_exit = callback
            return True


class GeneratorOutcome:
    """What a generator produced: its ``return`` value, or its chunks."""

    __slots__ = ("chunks", "return_value")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.return_value: Any = None

    def result(self) -> Any:
        """The return value if any; else the joined text if every chunk is a str; else chunks."""
        if self.return_value is not None:
            return self.return_value
        if self.chunks and all(isinstance(c, str) for c in self.chunks):
            return "".join(self.chunks)
        return self.chunks


async def execute(spec: FunctionSpec, kwargs: dict[str, Any], *, progress: Progress,
                  emit: Emit, limiter: anyio.CapacityLimiter | None = None,
                  watch: ThreadWatch | None = None) -> Any:
    """Run the call; returns its result (a GeneratorOutcome for generators).

    ``watch`` follows the thread of a sync function, which may outlive the call."""
    if spec.progress_param is not None:
        kwargs = {**kwargs, spec.progress_param: progress}
    fn = spec.fn
    if spec.options.isolate:
        return await _execute_isolated(spec, kwargs, progress, emit, limiter, watch)
    if spec.kind is Kind.COROUTINE:
        return await fn(**kwargs)
    if spec.kind is Kind.FUNCTION:
        call: Callable[[], Any] = functools.partial(fn, **kwargs)
        if watch is not None:
            call = watch.wrap(call)
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=limiter)
    outcome = GeneratorOutcome()
    if spec.kind is Kind.GENERATOR:
        await _drive_sync_generator(fn(**kwargs), spec.options.stream_buffer, progress,
                                    emit, outcome)
    else:
        await _drive_async_generator(fn(**kwargs), emit, outcome)
    return outcome


async def _execute_isolated(spec: FunctionSpec, kwargs: dict[str, Any], progress: Progress,
                            emit: Emit, limiter: anyio.CapacityLimiter | None,
                            watch: ThreadWatch | None) -> Any:
    """An async function on a loop of its own in a thread (``isolate=True``)."""
    if spec.kind is Kind.ASYNC_GENERATOR:
        outcome = GeneratorOutcome()
        await _drive_sync_generator(iterate_isolated(spec.fn(**kwargs)),
                                    spec.options.stream_buffer, progress, emit, outcome)
        return outcome
    isolated = IsolatedCoroutine(spec.fn(**kwargs))
    run: Callable[[], Any] = isolated.run if watch is None else watch.wrap(isolated.run)
    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=limiter)
    except anyio.get_cancelled_exc_class():
        isolated.cancel()  # the thread is abandoned; stop the coroutine on its loop too
        raise


async def _drive_sync_generator(gen: Any, buffer: int, progress: Progress, emit: Emit,
                                outcome: GeneratorOutcome) -> None:
    bridge: SyncIteratorBridge[Any] = SyncIteratorBridge(gen, buffer=buffer)
    batches = bridge.batches()
    finished = False
    try:
        async for batch in batches:
            outcome.chunks.extend(await emit(batch))
        finished = True
        outcome.return_value = bridge.return_value
    finally:
        if not finished:
            progress.cancel("stopped")
        with anyio.CancelScope(shield=True):
            await batches.aclose()  # type: ignore[attr-defined]
            if not finished:
                await bridge.wait_closed(CLOSE_GRACE)


async def _drive_async_generator(agen: AsyncIterator[Any], emit: Emit,
                                 outcome: GeneratorOutcome) -> None:
    blocking = False  # its last step held the loop: the next one takes a turn (loopshare)
    try:
        while True:
            step = loopshare.Step(agen.__anext__())
            async with loopshare.turn() if blocking else _FREE:
                try:
                    chunk = await step
                except StopAsyncIteration:
                    break
                outcome.chunks.extend(await emit([chunk]))
                blocking = step.blocked
                if blocking:
                    await loopshare.pause(step)
                elif not step.suspended:
                    # It made this item without giving the loop a turn (no await at
                    # all): give it one now, or such a generator holds the loop until
                    # it ends and its stream arrives all at once.
                    await asyncio.sleep(0)
    finally:
        with anyio.CancelScope(shield=True):
            await agen.aclose()  # type: ignore[attr-defined]
