"""``app.local()``: an engine in this process (a store chosen by URL, SQLite by default,
plus in-process workers) and clients that call its job service directly.

``LocalTransport`` is the job service with an owner bound, as a ``Transport``
(genq.client.transport); ``LocalRunner`` (what ``app.local()`` returns) runs the engine
and hands out a ``genq.AsyncClient`` (``async with``) or a ``genq.Client`` (``with``)
over it: the same classes as for a server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from genq import paging
from genq.app import App
from genq.client import AsyncClient, Client
from genq.engine import Engine, JobService
from genq.errors import BadRequest
from genq.models import Event, JobInfo, JobStatus, SubmitReason
from genq.store import store_from_url


class LocalTransport:
    """An engine's job service, called in-process for one owner. It runs on the engine's
    event loop; the engine belongs to whoever runs it (``app.local()``), so ``aclose``
    leaves it alone."""

    def __init__(self, jobs: JobService, owner: str = "local") -> None:
        self.jobs = jobs
        self.owner = owner

    async def submit(self, function: str, inputs: dict[str, Any], *,
                     priority: int | None = None, idempotency_key: str | None = None,
                     webhook: str | None = None, webhook_events: Sequence[str] | None = None
                     ) -> tuple[JobInfo, SubmitReason]:
        if webhook is not None or webhook_events is not None:
            raise BadRequest("webhooks are sent by a genq server (genq serve); app.local() "
                             "does not send them", field="webhook")
        submitted = await self.jobs.submit(self.owner, function, inputs, priority=priority,
                                           idempotency_key=idempotency_key)
        return JobInfo.from_job(submitted.job, ticket=submitted.ticket), submitted.reason

    async def get(self, job_id: str) -> JobInfo:
        job = await self.jobs.get(self.owner, job_id)
        return JobInfo.from_job(job, await self.jobs.queue_position(job),
                                await self.jobs.waiting(job))

    async def list_jobs(self, *, function: str | None = None,
                        status: str | JobStatus | None = None, limit: int = 50,
                        before: paging.Before = None) -> list[JobInfo]:
        """``status`` as a name (as over HTTP) or a JobStatus."""
        stamp, before_id = paging.split(before)
        jobs = await self.jobs.list_jobs(self.owner, function=function, limit=limit,
                                         before=stamp, before_id=before_id,
                                         status=None if status is None else JobStatus(status))
        return [JobInfo.from_job(job) for job in jobs]

    def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        return self.jobs.follow(self.owner, job_id, after)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        return JobInfo.from_job(await self.jobs.wait(self.owner, job_id, timeout))

    async def cancel(self, job_id: str, *, ticket: str | None = None) -> JobInfo:
        return JobInfo.from_job(await self.jobs.cancel(self.owner, job_id, ticket))

    async def result(self, job_id: str) -> Any:
        return await self.jobs.result_value(self.owner, job_id)

    async def artifact(self, artifact_id: str) -> bytes:
        return (await self.jobs.artifact(self.owner, artifact_id))[1]

    async def functions(self) -> list[dict[str, Any]]:
        return [spec.describe() for spec in self.jobs.app.functions.values()]

    async def aclose(self) -> None:
        pass


class LocalRunner:
    """What ``app.local()`` returns: use it with ``with`` (sync) or ``async with``."""

    def __init__(self, app: App, store_url: str, *, workers: bool, owner: str,
                 shutdown_grace: float, devices: list[str] | None = None,
                 functions: list[str] | None = None) -> None:
        self.app = app
        self.devices = devices or ["cpu"]
        self.functions = functions  # None: all of the app's
        self.store_url = store_url
        self.workers = workers
        self.owner = owner
        self.shutdown_grace = shutdown_grace
        self._engine: Engine | None = None
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._serving: Future[None] | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def _new_engine(self) -> Engine:
        if self._engine is not None:
            raise RuntimeError("this app.local() runner is already in use")
        self._engine = Engine(self.app, store_from_url(self.store_url), workers=self.workers,
                              shutdown_grace=self.shutdown_grace, devices=self.devices,
                              functions=self.functions)
        return self._engine

    # -- async -----------------------------------------------------------------------
    async def __aenter__(self) -> AsyncClient:
        engine = self._new_engine()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(engine.serve)
        except BaseException as exc:
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            self._engine = None
            raise
        return AsyncClient(LocalTransport(engine.jobs, self.owner))

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._engine is not None and self._tg is not None
        try:
            with anyio.CancelScope(shield=True):
                await self._engine.stop()
        finally:
            tg, self._tg, self._engine = self._tg, None, None
            # Only cancellation belongs to the task group; an error raised in the
            # ``async with`` body propagates as itself, not wrapped in an ExceptionGroup.
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                await tg.__aexit__(exc_type, exc, tb)
            else:
                await tg.__aexit__(None, None, None)

    # -- sync ------------------------------------------------------------------------
    def __enter__(self) -> Client:
        engine = self._new_engine()
        self._portal_cm = start_blocking_portal()
        portal = self._portal = self._portal_cm.__enter__()
        try:
            self._serving, _ = portal.start_task(engine.serve)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            self._engine = None
            raise
        return Client.on_portal(portal, AsyncClient(LocalTransport(engine.jobs, self.owner)))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._engine is not None and self._portal_cm is not None
        assert self._portal is not None
        engine, portal, portal_cm = self._engine, self._portal, self._portal_cm
        self._engine = self._portal = self._portal_cm = None
        try:
            portal.call(engine.stop)
            if self._serving is not None:
                self._serving.result()
        finally:
            portal_cm.__exit__(exc_type, exc, tb)
