"""The embedded engine behind ``app.local()``: a SQLite store, in-process workers, and a
client that talks to them directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

from genq.app import App
from genq.client.base import AsyncClientBase
from genq.client.sync import SyncClient
from genq.errors import JobNotFound
from genq.models import Event, Job, JobStatus
from genq.store.base import Store
from genq.store.sqlite import SQLiteStore
from genq.worker import Worker


class LocalClient(AsyncClientBase):
    """The async client of an embedded engine: calls the store in-process."""

    def __init__(self, app: App, store: Store, owner: str = "local") -> None:
        self.app = app
        self.store = store
        self.owner = owner

    async def _submit(self, function: str, inputs: dict[str, Any], priority: int | None,
                      idempotency_key: str | None) -> tuple[Job, str]:
        job, policy = self.app.new_job(function, inputs, owner=self.owner, priority=priority,
                                       idempotency_key=idempotency_key)
        submitted = await self.store.create_job(job, policy)
        return submitted.job, submitted.reason

    async def get(self, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        if job is None or job.owner != self.owner:
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        return job

    async def _follow(self, job_id: str, after: int) -> AsyncIterator[list[Event]]:
        await self.get(job_id)
        async for batch in self.store.follow(job_id, after):
            yield batch

    async def _wait(self, job_id: str, timeout: float | None) -> Job:
        job = await self.store.wait_terminal(job_id, timeout)
        if job.owner != self.owner:
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        return job

    async def _cancel(self, job_id: str) -> Job:
        await self.get(job_id)
        return await self.store.cancel(job_id)

    async def _artifact(self, artifact_id: str) -> bytes:
        found = await self.store.get_artifact(artifact_id)
        if found is None:
            raise JobNotFound(f"no artifact {artifact_id}", artifact_id=artifact_id)
        return found[1]

    async def list_jobs(self, *, function: str | None = None,
                        status: str | JobStatus | None = None, limit: int = 50,
                        before: float | None = None) -> list[Job]:
        """My jobs, newest first; ``status`` as a name (like AsyncClient's) or JobStatus."""
        return await self.store.list_jobs(
            owner=self.owner, function=function, limit=limit, before=before,
            status=None if status is None else JobStatus(status))


class Engine:
    """Store + worker with one life cycle: ``serve`` runs until ``stop`` is called."""

    def __init__(self, app: App, store: Store, *, workers: bool, shutdown_grace: float) -> None:
        self.app = app
        self.store = store
        self.worker = Worker(app, store) if workers else None
        self.shutdown_grace = shutdown_grace
        self._stop = anyio.Event()
        self._stopped = anyio.Event()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.store.open()
            try:
                async with anyio.create_task_group() as tg:
                    if self.worker is not None:
                        await tg.start(self.worker.run)
                    task_status.started()
                    await self._stop.wait()
                    if self.worker is not None:
                        await self.worker.stop(self.shutdown_grace)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.store.close()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()


class LocalRunner:
    """What ``app.local()`` returns: use it with ``with`` (sync) or ``async with``."""

    def __init__(self, app: App, path: Path, *, workers: bool, owner: str,
                 shutdown_grace: float) -> None:
        self.app = app
        self.path = path
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
        self._engine = Engine(self.app, SQLiteStore(self.path), workers=self.workers,
                              shutdown_grace=self.shutdown_grace)
        return self._engine

    # -- async -----------------------------------------------------------------------
    async def __aenter__(self) -> LocalClient:
        engine = self._new_engine()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(engine.serve)
        except BaseException as exc:
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            self._engine = None
            raise
        return LocalClient(self.app, engine.store, self.owner)

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
    def __enter__(self) -> SyncClient:
        engine = self._new_engine()
        self._portal_cm = start_blocking_portal()
        portal = self._portal = self._portal_cm.__enter__()
        try:
            self._serving, _ = portal.start_task(engine.serve)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            self._engine = None
            raise
        return SyncClient(portal, LocalClient(self.app, engine.store, self.owner))

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
