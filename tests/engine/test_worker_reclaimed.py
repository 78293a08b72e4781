"""A worker whose run of a job lost its lease while the run was stuck (the process was
paused, a long GC) and which then claims the same job again: the old, fenced-off run
and the new one share a job id, and neither may clobber the other's bookkeeping. The
new run must keep its lease and finish the job (which runs twice, never a third time),
and every slot must come back, so a 2-slot worker still runs two jobs at once.

Deterministic, in one process on a real SQLite store: housekeeping run "an hour
ahead" makes the lease lapse while the first run waits at a gate of the test's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

import genq
from genq import EventType, JobStatus
from genq.engine import Engine
from genq.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

OWNER = "local"


def held_app(gates: list[anyio.Event]) -> genq.App:
    app = genq.App("reclaimed")

    @app.function(concurrency=2, retries=3)
    async def held(tag: str) -> AsyncIterator[str]:
        """Streams ``tag:before``, waits for the test to open its gate, ``tag:after``."""
        gate = anyio.Event()
        gates.append(gate)
        yield f"{tag}:before"
        await gate.wait()
        yield f"{tag}:after"

    return app


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    with anyio.move_on_after(10):  # the worker's state has no event to wait on
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_job_claimed_again_by_its_own_worker_runs_twice_not_three_times(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gates: list[anyio.Event] = []
    engine = Engine(held_app(gates), SQLiteStore(tmp_path / "jobs.sqlite3"), lease=30.0,
                    shutdown_grace=1.0)
    worker = engine.workers[0]
    assert worker is not None
    caplog.set_level(logging.WARNING, logger="genq.worker")
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        job = (await engine.jobs.submit(OWNER, "held", {"tag": "a"})).job
        await wait_for(lambda: len(gates) == 1, "the first run to start")
        # The first run is stuck at its gate while, to the store, its lease lapsed:
        # housekeeping puts the job back in the queue, and this same worker, with a
        # free slot, claims it again at once.
        await engine.store.housekeep(time.time() + 3600)
        await wait_for(lambda: len(gates) == 2, "the job's second run to start")
        gates[0].set()  # the old run wakes, still believing the job is its own
        await wait_for(lambda: "lost job" in caplog.text, "the old run to find it lost")
        gates[1].set()
        with anyio.fail_after(10):
            done = await engine.jobs.wait(OWNER, job.id)
        events = await engine.jobs.read_events(OWNER, job.id)
        assert worker.running_by_function() == {} and worker.active_jobs == []

        # Both slots are free: two jobs run at once.
        more = [(await engine.jobs.submit(OWNER, "held", {"tag": t})).job for t in "bc"]
        await wait_for(lambda: len(gates) == 4, "two jobs to run at once")
        for gate in gates[2:]:
            gate.set()
        with anyio.fail_after(10):
            ended = [await engine.jobs.wait(OWNER, j.id) for j in more]
        await engine.stop()

    assert done.status is JobStatus.SUCCEEDED
    types = [e.type for e in events]
    assert types.count(EventType.STARTED) == 2  # the first run, the reclaimed one: no third
    last_run = events[len(types) - types[::-1].index(EventType.STARTED):]
    assert [e.data["chunk"] for e in last_run if e.type is EventType.OUTPUT] == [
        "a:before", "a:after"]
    assert types[-1] is EventType.SUCCEEDED and types.count(EventType.SUCCEEDED) == 1
    assert all(j.status is JobStatus.SUCCEEDED for j in ended)
    assert "Traceback" not in caplog.text and "KeyError" not in caplog.text
