"""``genq.AsyncClient``: the one async client surface, over any transport.

``AsyncClient(url)`` talks to a server (``HttpTransport``); ``async with app.local()``
gives the same class over the engine in this process (``LocalTransport``). Submit,
events, results, streams, map and the decoding of binary outputs are written here once,
on the transport's ten calls (genq.client.transport), so code moves between embedded
and remote use unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import httpx

from genq.client.attempts import AttemptWatch
from genq.client.http import HttpTransport
from genq.client.transport import Transport
from genq.errors import JobCancelled, JobExpired, JobFailed
from genq.models import ArtifactRef, Event, EventType, JobInfo, JobStatus, SubmitReason
from genq.paging import Before

_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))  # JSON scalars


@dataclass(frozen=True, slots=True)
class Artifact:
    """A binary result or output chunk: ``data`` with its ``content_type`` and ``name``."""

    ref: ArtifactRef
    data: bytes

    @property
    def content_type(self) -> str:
        return self.ref.content_type

    @property
    def name(self) -> str:
        return self.ref.name

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(self.data)
        return target


class AsyncJob:
    """A handle on one job: follow its events or outputs, wait for its result, cancel it.

    ``reason`` says why a submission answered with this job (``SubmitReason``;
    ``EXISTING`` for a handle made by ``client.job(id)``), and ``submitted`` is the job
    as that answer showed it (None for ``client.job(id)``, which makes no request).
    ``ticket`` is that submission's hold on the job (``submitted.ticket``): ``cancel``
    passes it, so a job that de-duplication shared with other submissions goes on for
    them (docs/api.md, "Dedupe"); a handle from ``client.job(id)`` has none, and its
    ``cancel`` cancels the job.
    """

    def __init__(self, client: AsyncClient, job_id: str, function: str = "",
                 reason: SubmitReason = SubmitReason.EXISTING,
                 submitted: JobInfo | None = None) -> None:
        self._client = client
        self.id = job_id
        self.function = function
        self.reason = reason
        self.submitted = submitted
        self.ticket = None if submitted is None else submitted.ticket

    def __repr__(self) -> str:
        return f"<AsyncJob {self.function} {self.id}>"

    async def info(self) -> JobInfo:
        return await self._client.get(self.id)

    async def events(self, after: int = 0) -> AsyncIterator[Event]:
        """Every event after ``after``, live, ending with the terminal one."""
        async for batch in self._client.transport.follow(self.id, after):
            for event in batch:
                yield event

    def event_batches(self, after: int = 0) -> AsyncIterator[list[Event]]:
        """``events`` as the transport delivers them, in batches (one thread crossing
        per batch for the blocking client)."""
        return self._client.transport.follow(self.id, after)

    async def outputs(self) -> AsyncIterator[Any]:
        """The job's output chunks from its first, live, decoded as ``result()`` decodes
        (binary chunks fetched as ``Artifact``), with a ``genq.Restart`` where the job
        started over and the chunks before it were discarded; at the end, raises
        JobFailed, JobCancelled or JobExpired if it did not succeed. Leaving early leaves
        the job running (unlike ``client.stream``, which owns the job it submits)."""
        async for batch in self.output_batches():
            for chunk in batch:
                yield chunk

    def output_batches(self) -> AsyncIterator[list[Any]]:
        """``outputs`` in batches: the chunks of each batch of events."""
        return self._client._output_batches(self.id, cancel_if_left=False)

    async def result(self, timeout: float | None = None) -> Any:
        """The result once finished; raises JobFailed / JobCancelled / JobExpired, or
        ResultTimeout after ``timeout`` seconds (the job itself goes on)."""
        return await self._client._outcome(await self._client.transport.wait(self.id, timeout))

    async def cancel(self) -> JobInfo:
        """Let go of the job: cancelled unless other submissions joined it (``ticket``)."""
        return await self._client.cancel(self.id, ticket=self.ticket)


class AsyncClient:
    """The async client: ``async with genq.AsyncClient(url, api_key=...) as client``.

    ``url`` is a server's URL, for which an ``HttpTransport`` is made with the options
    (``api_key``; ``connect_timeout`` 5, ``read_timeout`` 30, ``stream_idle_timeout`` 45,
    ``retry_for`` 120 seconds; ``transport``, an httpx transport under it), or any
    ``Transport`` (then without options). ``app.local()`` gives one over its engine.
    """

    def __init__(self, url: str | Transport, *, api_key: str | None = None,
                 connect_timeout: float | None = None, read_timeout: float | None = None,
                 stream_idle_timeout: float | None = None, retry_for: float | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        given: dict[str, Any] = {name: value for name, value in (
            ("api_key", api_key), ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout), ("stream_idle_timeout", stream_idle_timeout),
            ("retry_for", retry_for), ("transport", transport)) if value is not None}
        if isinstance(url, str):
            self.transport: Transport = HttpTransport(url, **given)
        elif given:
            raise TypeError(f"{', '.join(given)}: options of a server URL, not of a "
                            f"{type(url).__name__}")
        else:
            self.transport = url

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # -- jobs ------------------------------------------------------------------------
    async def submit(self, function: str, inputs: Mapping[str, Any] | None = None, /, *,
                     priority: int | None = None, idempotency_key: str | None = None,
                     webhook: str | None = None, webhook_events: Sequence[str] | None = None,
                     **kwargs: Any) -> AsyncJob:
        """Queue a call: ``submit("render", prompt=...)`` or ``submit("render", {...})``.
        ``webhook``: a URL the server posts the job's events to, signed (Standard
        Webhooks; docs/webhooks.md): ``job.completed`` always, and ``webhook_events``
        among started, progress, output."""
        data = {**(inputs or {}), **kwargs}
        # Passed only when given, so a transport written before webhooks still works.
        hooks: dict[str, Any] = {} if webhook is None else {"webhook": webhook}
        if webhook_events is not None:
            hooks["webhook_events"] = webhook_events
        job, reason = await self.transport.submit(function, data, priority=priority,
                                                  idempotency_key=idempotency_key, **hooks)
        return AsyncJob(self, job.id, job.function, reason, job)

    def job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job (no request is made)."""
        return AsyncJob(self, job_id)

    async def get(self, job_id: str) -> JobInfo:
        """The job's current state; raises JobNotFound."""
        return await self.transport.get(job_id)

    async def cancel(self, job_id: str, *, ticket: str | None = None) -> JobInfo:
        """Cancel the job; with a submission's ``ticket``, only that submission lets go
        (the job is cancelled once none holds it). A job handle passes its own."""
        if ticket is None:  # (a Transport written before tickets still works)
            return await self.transport.cancel(job_id)
        return await self.transport.cancel(job_id, ticket=ticket)

    async def list_jobs(self, *, function: str | None = None,
                        status: str | JobStatus | None = None, limit: int = 50,
                        before: Before = None) -> list[JobInfo]:
        """My jobs, newest first. Next page: ``before=`` the last job of this one (or
        the API's ``next`` cursor; a plain timestamp still works, but jobs that share the
        boundary's instant may be skipped)."""
        return await self.transport.list_jobs(function=function, status=status, limit=limit,
                                              before=before)

    async def functions(self) -> list[dict[str, Any]]:
        """The registered functions: name, description, kind, streams, input_schema and
        options, as GET /api/functions lists them."""
        return await self.transport.functions()

    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        return await self.job(job_id).result(timeout)

    async def run(self, function: str, inputs: Mapping[str, Any] | None = None, /, *,
                  timeout: float | None = None, **kwargs: Any) -> Any:
        """Submit and wait for the result."""
        job = await self.submit(function, inputs, **kwargs)
        return await job.result(timeout)

    async def stream(self, function: str, inputs: Mapping[str, Any] | None = None, /,
                     **kwargs: Any) -> AsyncIterator[Any]:
        """Submit and yield output chunks as they are produced.

        When the job starts over (a retry, a lost worker, a shutdown) after yielding
        output, a ``genq.Restart`` comes first: the chunks before it are not part of the
        result, so clear what you show (genq.client.attempts; docs/api.md, "Streams and
        retries"). Leaving the loop early cancels the job: a stream belongs to its
        consumer.
        """
        async for batch in self.stream_batches(function, inputs, **kwargs):
            for chunk in batch:
                yield chunk

    def stream_batches(self, function: str, inputs: Mapping[str, Any] | None = None, /,
                       **kwargs: Any) -> AsyncIterator[list[Any]]:
        """``stream`` in batches of chunks (what the blocking client drives)."""
        data = {**(inputs or {}), **kwargs}

        async def submit() -> AsyncJob:
            return await self.submit(function, data)

        return self._output_batches(submit, cancel_if_left=True)

    async def map(self, function: str, inputs: Iterable[Mapping[str, Any]], *,
                  concurrency: int = 8, return_exceptions: bool = False) -> list[Any]:
        """Run ``function`` over many inputs, at most ``concurrency`` jobs in flight;
        results come back in input order. The first error (JobFailed, InvalidInput...)
        is raised as itself, unless ``return_exceptions`` puts errors in the results."""
        items = list(inputs)
        results: list[Any] = [None] * len(items)
        failures: list[Exception] = []
        # ``concurrency`` runners share one iterator, rather than a task per input held
        # back by a semaphore: the same bound and order for a fraction of the tasks, so a
        # map over 100,000 inputs does not keep 100,000 suspended coroutines alive.
        pending = iter(enumerate(items))

        async def runner() -> None:
            for index, data in pending:
                try:
                    results[index] = await self.run(function, data)
                except Exception as exc:
                    if not return_exceptions:
                        failures.append(exc)
                        tg.cancel_scope.cancel()  # stop waiting; submitted jobs go on
                        return
                    results[index] = exc

        async with anyio.create_task_group() as tg:
            for _ in range(min(max(1, concurrency), len(items))):
                tg.start_soon(runner)
        if failures:
            raise failures[0]
        return results

    async def decode(self, value: Any) -> Any:
        """A stored result or output chunk as ``result()`` returns it: artifact
        references (also inside lists and dicts) fetched as ``Artifact``, the rest as is."""
        ref = ArtifactRef.from_dict(value)
        if ref is not None:
            return Artifact(ref, await self.transport.artifact(ref.id))
        if isinstance(value, list):
            if all(type(v) in _PLAIN_TYPES for v in value):  # a vector: nothing to fetch
                return value
            return [await self.decode(v) for v in value]
        if isinstance(value, dict):  # encode() stores binaries nested in dicts too
            return {k: await self.decode(v) for k, v in value.items()}
        return value

    # -- shared machinery ------------------------------------------------------------
    async def _output_batches(self, job: str | Callable[[], Awaitable[AsyncJob]], *,
                              cancel_if_left: bool) -> AsyncIterator[list[Any]]:
        """Decoded output chunks of ``job`` (an id, or a submission still to make), one
        list per batch of events, and a ``Restart`` where a new run replaces the chunks
        before it; at the end the job's error, if it did not succeed.

        One generator submits, follows and cancels: the stream's ``finally`` must run
        when its consumer closes it, and an inner generator would only be closed
        whenever it is finalized.
        """
        handle = self.job(job) if isinstance(job, str) else await job()
        job_id = handle.id
        finished = False
        attempts = AttemptWatch()
        try:
            async for events in self.transport.follow(job_id, 0):
                chunks: list[Any] = []
                for event in events:
                    restart = attempts.see(event)
                    if restart is not None:
                        chunks.append(restart)
                    elif event.type is EventType.OUTPUT:
                        # Text (tokens) needs no decoding: skip an await per chunk for it.
                        chunk = event.data["chunk"]
                        chunks.append(chunk if type(chunk) is str else await self.decode(chunk))
                if chunks:
                    yield chunks
                last = events[-1]
                if last.terminal:
                    finished = True
                    if last.type is not EventType.SUCCEEDED:
                        await self._outcome(await self.get(job_id))
                    return
        finally:
            if cancel_if_left and not finished:
                # Best effort: the consumer has gone, so a failure here (the engine already
                # shut down, the server unreachable) has nobody to report to, and raising
                # from a closing generator only ends up as noise when it is finalized.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await handle.cancel()  # its submission's ticket: others' go on

    async def _outcome(self, job: JobInfo) -> Any:
        """The decoded result of a terminal job, or the matching exception."""
        where = f"job {job.id} ({job.function})"
        if job.status is JobStatus.SUCCEEDED:
            # A result too large for the job view is fetched on its own, whole.
            result = (job.result if job.result_size is None
                      else await self.transport.result(job.id))
            return await self.decode(result)
        if job.status is JobStatus.FAILED:
            err = job.error or {}
            raise JobFailed(f"{where} failed: {err.get('type', 'Error')}: "
                            f"{err.get('message', '')}", job_id=job.id, error=err)
        if job.status is JobStatus.CANCELLED:
            raise JobCancelled(f"{where} was cancelled", job_id=job.id)
        raise JobExpired(f"{where} expired in the queue before it could start", job_id=job.id)
