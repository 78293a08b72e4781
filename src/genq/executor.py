"""Runs one call of a registered function, whatever its kind, without blocking the loop.

* ``def``: in a worker thread (abandoned on cancel; it stops at its next Progress call).
* ``async def``: awaited on the loop; cancelled the asyncio way.
* generator: iterated in a thread through ``SyncIteratorBridge`` (bounded buffer, closed
  in its own thread when the consumer stops).
* async generator: iterated on the loop and ``aclose``d when the consumer stops.

Output chunks are handed to ``emit`` in batches, as they are produced. A generator's
output is measured as it goes (``GeneratorOutcome``): a chunk over the function's
``max_chunk_bytes``, or output past its ``max_output_bytes``, stops the generator and
fails the call with OutputTooLarge, after everything before it was emitted. The chunks
are kept for the result only while they are small; a larger output's result is a
reference to the job's log (``OutputRef``), so memory never holds a job's whole output.
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
from pydantic_core import PydanticSerializationError, to_jsonable_python

from genq import loopshare
from genq.bridge import SyncIteratorBridge
from genq.errors import OutputTooLarge
from genq.functions import FunctionSpec, Kind, Options
from genq.isolation import IsolatedCoroutine, iterate_isolated
from genq.jsoncodec import compact_json
from genq.media import File, Image
from genq.models import INLINE_RESULT_BYTES, OutputRef
from genq.progress import Progress

Emit = Callable[[list[Any]], Awaitable[list[Any]]]  # returns the chunks as stored

CLOSE_GRACE = 5.0  # seconds a stopped sync generator gets to run its finally blocks
_FREE = contextlib.nullcontext()  # the step of a generator not known to block
STREAM_BUFFER_BYTES = 8 << 20  # how far ahead a sync generator may run, in bytes


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


def chunk_bytes(chunk: Any) -> tuple[int, bool]:
    """The size of an output chunk in bytes, and whether it is binary (an artifact, not
    in the log): text as UTF-8, bytes and files as they are, a PIL image by its pixels,
    anything else as the JSON it will be stored as."""
    if type(chunk) is str:
        return (len(chunk) if chunk.isascii() else len(chunk.encode())), False
    if isinstance(chunk, bytes | bytearray | memoryview):
        return len(chunk), True
    if isinstance(chunk, File | Image):
        return len(chunk.data), True
    if type(chunk).__module__.startswith("PIL.") and hasattr(chunk, "getbands"):
        return chunk.width * chunk.height * len(chunk.getbands()), True
    try:
        return len(compact_json(to_jsonable_python(chunk))), False
    except (PydanticSerializationError, TypeError, ValueError):
        return 0, False  # not storable: encoding it fails the job with NotSerializable


class GeneratorOutcome:
    """What a generator produced: its ``return`` value, or its chunks, measured against
    the function's output limits as they arrive."""

    __slots__ = ("_function", "_max_chunk", "_max_output", "chunks", "count",
                 "return_value", "size", "text")

    def __init__(self, function: str, options: Options) -> None:
        self._function = function
        self._max_chunk = options.max_chunk_bytes
        self._max_output = options.max_output_bytes
        self.chunks: list[Any] | None = []  # as stored; None once past INLINE_RESULT_BYTES
        self.return_value: Any = None
        self.count = 0
        self.size = 0
        self.text = True  # every chunk is a str

    def admit(self, batch: list[Any]) -> tuple[list[Any], OutputTooLarge | None]:
        """The chunks of ``batch`` within the limits, counted, and the error that stops
        the generator at the first one over a limit (None when all are within)."""
        for index, chunk in enumerate(batch):
            size, binary = chunk_bytes(chunk)
            if not binary and size > self._max_chunk:
                return batch[:index], self._too_large(
                    "max_chunk_bytes", self._max_chunk,
                    f"output chunk {self.count + 1} is {size:,} bytes")
            if self.size + size > self._max_output:
                return batch[:index], self._too_large(
                    "max_output_bytes", self._max_output,
                    f"output chunk {self.count + 1} would take the output to "
                    f"{self.size + size:,} bytes")
            self.size += size
            self.count += 1
            self.text = self.text and type(chunk) is str
        return batch, None

    def _too_large(self, option: str, limit: int, what: str) -> OutputTooLarge:
        return OutputTooLarge(
            f"{what}, over {option} = {limit:,} bytes of {self._function!r}: the job was "
            f"stopped after {self.count:,} chunks ({self.size:,} bytes) (raise the limit "
            f"with @app.function({option}=...))", option=option, limit=limit)

    def keep(self, stored: list[Any]) -> None:
        """Keep the stored form of admitted chunks for the result while it is small."""
        if self.chunks is not None:
            if self.size > INLINE_RESULT_BYTES:
                self.chunks = None  # the result will be read back from the log
            else:
                self.chunks.extend(stored)

    def result(self, job_id: str, after: int) -> Any:
        """The return value if any; else the joined text if every chunk is a str, else
        the chunks; for an output too large to keep, a reference to the log of
        ``job_id`` after event ``after`` (the attempt's ``started`` event)."""
        if self.return_value is not None:
            return self.return_value
        if self.chunks is None:
            return OutputRef(job_id, after, self.size, self.count, self.text).to_dict()
        if self.chunks and self.text:
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
    outcome = GeneratorOutcome(spec.name, spec.options)
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
        outcome = GeneratorOutcome(spec.name, spec.options)
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


async def _emit_admitted(batch: list[Any], emit: Emit, outcome: GeneratorOutcome) -> None:
    """Emit the chunks within the limits; then raise OutputTooLarge if one was over."""
    admitted, too_large = outcome.admit(batch)
    if admitted:
        outcome.keep(await emit(admitted))
    if too_large is not None:
        raise too_large


async def _drive_sync_generator(gen: Any, buffer: int, progress: Progress, emit: Emit,
                                outcome: GeneratorOutcome) -> None:
    bridge: SyncIteratorBridge[Any] = SyncIteratorBridge(
        gen, buffer=buffer, weigh=lambda chunk: chunk_bytes(chunk)[0],
        max_bytes=STREAM_BUFFER_BYTES)
    batches = bridge.batches()
    finished = False
    try:
        async for batch in batches:
            await _emit_admitted(batch, emit, outcome)
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
                await _emit_admitted([chunk], emit, outcome)
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
