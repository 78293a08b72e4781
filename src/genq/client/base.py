"""The client surface shared by ``app.local()`` and the HTTP clients.

Subclasses supply six primitives (``_submit``, ``get``, ``_follow``, ``_wait``,
``_cancel``, ``_artifact``) and inherit submit / events / result / stream / map / run,
so code moves between embedded and remote use unchanged. Event following yields
batches internally, so a sync wrapper crosses threads once per batch, not per event.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from genq.errors import JobCancelled, JobExpired, JobFailed
from genq.models import ArtifactRef, Event, EventType, Job, JobStatus, SubmitReason


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
    """A handle on one job: follow its events, wait for its result, cancel it."""

    def __init__(self, client: AsyncClientBase, job: Job,
                 reason: SubmitReason = SubmitReason.NEW) -> None:
        self._client = client
        self.id = job.id
        self.function = job.function
        self.submitted = job  # the job as it was when submitted (or found)
        self.reason = reason

    def __repr__(self) -> str:
        return f"<AsyncJob {self.function} {self.id}>"

    async def info(self) -> Job:
        return await self._client.get(self.id)

    async def events(self, after: int = 0) -> AsyncIterator[Event]:
        """Every event after ``after``, live, ending with the terminal one."""
        async for batch in self._client._follow(self.id, after):
            for event in batch:
                yield event

    async def result(self, timeout: float | None = None) -> Any:
        """The result once finished; raises JobFailed / JobCancelled / JobExpired, or
        ResultTimeout after ``timeout`` seconds (the job itself goes on)."""
        job = await self._client._wait(self.id, timeout)
        return await self._client._outcome(job)

    async def cancel(self) -> Job:
        return await self._client._cancel(self.id)


class AsyncClientBase(abc.ABC):
    # -- primitives a transport supplies ---------------------------------------------
    @abc.abstractmethod
    async def _submit(self, function: str, inputs: dict[str, Any], priority: int | None,
                      idempotency_key: str | None) -> tuple[Job, SubmitReason]: ...

    @abc.abstractmethod
    async def get(self, job_id: str) -> Job:
        """The job's current state; raises JobNotFound."""

    @abc.abstractmethod
    def _follow(self, job_id: str, after: int) -> AsyncIterator[list[Event]]: ...

    @abc.abstractmethod
    async def _wait(self, job_id: str, timeout: float | None) -> Job: ...

    @abc.abstractmethod
    async def _cancel(self, job_id: str) -> Job: ...

    @abc.abstractmethod
    async def _artifact(self, artifact_id: str) -> bytes: ...

    # -- the surface -----------------------------------------------------------------
    async def submit(self, function: str, inputs: Mapping[str, Any] | None = None, /, *,
                     priority: int | None = None, idempotency_key: str | None = None,
                     **kwargs: Any) -> AsyncJob:
        """Queue a call: ``submit("render", prompt=...)`` or ``submit("render", {...})``."""
        data = {**(inputs or {}), **kwargs}
        job, reason = await self._submit(function, data, priority, idempotency_key)
        return AsyncJob(self, job, reason)

    def job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job (no request is made)."""
        return AsyncJob(self, Job(id=job_id, function="", input={}), SubmitReason.EXISTING)

    async def cancel(self, job_id: str) -> Job:
        return await self._cancel(job_id)

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

        Leaving the loop early cancels the job: a stream belongs to its consumer.
        """
        async for batch in self._stream_batches(function, {**(inputs or {}), **kwargs}):
            for chunk in batch:
                yield chunk

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

    # -- shared machinery ------------------------------------------------------------
    async def _stream_batches(self, function: str, data: dict[str, Any]
                              ) -> AsyncIterator[list[Any]]:
        job = await self.submit(function, data)
        finished = False
        try:
            async for events in self._follow(job.id, 0):
                # Text (tokens) needs no decoding: skip an await per chunk for it.
                chunks = [c if type(c := e.data["chunk"]) is str else await self._decode(c)
                          for e in events if e.type is EventType.OUTPUT]
                if chunks:
                    yield chunks
                last = events[-1]
                if last.terminal:
                    finished = True
                    if last.type is not EventType.SUCCEEDED:
                        await self._outcome(await self.get(job.id))
                    return
        finally:
            if not finished:
                # Best effort: the consumer has gone, so a failure here (the engine already
                # shut down, the server unreachable) has nobody to report to, and raising
                # from a closing generator only ends up as noise when it is finalized.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self._cancel(job.id)

    async def _outcome(self, job: Job) -> Any:
        """The decoded result of a terminal job, or the matching exception."""
        where = f"job {job.id} ({job.function})"
        if job.status is JobStatus.SUCCEEDED:
            return await self._decode(job.result)
        if job.status is JobStatus.FAILED:
            err = job.error or {}
            raise JobFailed(f"{where} failed: {err.get('type', 'Error')}: "
                            f"{err.get('message', '')}", job_id=job.id, error=err)
        if job.status is JobStatus.CANCELLED:
            raise JobCancelled(f"{where} was cancelled", job_id=job.id)
        raise JobExpired(f"{where} expired in the queue before it could start", job_id=job.id)

    async def _decode(self, value: Any) -> Any:
        ref = ArtifactRef.from_dict(value)
        if ref is not None:
            return Artifact(ref, await self._artifact(ref.id))
        if isinstance(value, list):
            return [await self._decode(v) for v in value]
        if isinstance(value, dict):  # encode() stores binaries nested in dicts too
            return {k: await self._decode(v) for k, v in value.items()}
        return value
