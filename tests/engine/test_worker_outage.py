"""The worker through a store outage, in one process: a real SQLite store that answers
every call StoreUnavailable while ``down`` (as the Redis store does once ``retry_for``
has passed and its circuit is open). A streaming job that runs and ends while the store
is away ends succeeded with every chunk; a worker shut down while the store is still
away gives up after its grace period instead of hanging, and records nothing.
(The same against a real Redis stopped and restarted: tests/cluster/test_cluster.py.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest

import genq
from genq import EventType, JobStatus
from genq.engine import Engine
from genq.errors import StoreUnavailable
from genq.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

OWNER = "local"
WORKER_CALLS = ("append_events", "finish", "claim", "claim_many", "extend_leases",
                "register_worker", "housekeep", "put_artifact")


class OutageStore(SQLiteStore):
    """Every call a worker makes fails while ``down``."""

    down = False


def _failing_while_down(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    method = getattr(SQLiteStore, name)

    async def call(self: OutageStore, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise StoreUnavailable(f"{name}: the store is down (test)")
        return await method(self, *args, **kwargs)

    return call


for _name in WORKER_CALLS:
    setattr(OutageStore, _name, _failing_while_down(_name))


def streaming_app(started: anyio.Event, go_on: anyio.Event) -> genq.App:
    app = genq.App("outage")

    @app.function(retries=2)
    async def stream(n: int) -> AsyncIterator[str]:
        for i in range(n):
            if i == 5:
                started.set()
                await go_on.wait()
            yield str(i)

    return app


async def test_a_job_streams_and_ends_while_the_store_is_away(tmp_path: Path) -> None:
    started, go_on = anyio.Event(), anyio.Event()
    store = OutageStore(tmp_path / "jobs.sqlite3")
    engine = Engine(streaming_app(started, go_on), store, lease=30.0)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        job = (await engine.jobs.submit(OWNER, "stream", {"n": 100})).job
        await started.wait()
        store.down = True
        go_on.set()  # the 95 other chunks, and the job's end, while the store is away
        await anyio.sleep(0.5)
        store.down = False
        with anyio.fail_after(10):
            done = await engine.jobs.wait(OWNER, job.id)
        events = await engine.jobs.read_events(OWNER, job.id)
        await engine.stop()
    assert done.status is JobStatus.SUCCEEDED and done.result == "".join(
        str(i) for i in range(100))
    assert [e.data["chunk"] for e in events if e.type is EventType.OUTPUT] == [
        str(i) for i in range(100)]
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events].count(EventType.STARTED) == 1


async def test_shutdown_while_the_store_is_away_gives_up_after_its_grace(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    started, go_on = anyio.Event(), anyio.Event()
    store = OutageStore(tmp_path / "jobs.sqlite3")
    engine = Engine(streaming_app(started, go_on), store, lease=30.0, shutdown_grace=0.3)
    caplog.set_level(logging.WARNING, logger="genq.worker")
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        job = (await engine.jobs.submit(OWNER, "stream", {"n": 10})).job
        await started.wait()
        store.down = True
        go_on.set()
        with anyio.fail_after(10):
            await engine.stop()  # returns: the waiting writes gave up
    assert f"job {job.id} (attempt 1) ended unrecorded" in caplog.text
    async with SQLiteStore(tmp_path / "jobs.sqlite3") as reopened:  # recovery: queued
        again = await reopened.get_job(job.id)
        events = await reopened.read_events(job.id)
    assert again is not None and again.status is JobStatus.QUEUED
    assert EventType.SUCCEEDED not in [e.type for e in events]
