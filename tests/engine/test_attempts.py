"""Which runs count as attempts, on both stores (docs/reliability.md, "Attempts").

A graceful stop of a worker (its shutdown grace ran out with the job unfinished) gives
the job back without using an attempt: the next run has the same number. A worker that
is lost (its lease lapsed: kill -9, a lost machine) used its attempt: the next run has
the next number. Every ``started`` and ``retrying`` event names the attempt it is about,
from 1, as ``JobInfo.attempts`` counts them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

import genq
from genq import EventType, JobStatus
from genq.engine import Engine
from genq.models import Event
from tests.support.store_fixtures import StoreMaker

pytestmark = pytest.mark.anyio

OWNER = "local"


def held_app(gates: list[anyio.Event]) -> genq.App:
    app = genq.App("attempts")

    @app.function(retries=2)
    async def held() -> AsyncIterator[str]:
        """Streams ``before``, waits for the test to open its gate, then ``after``."""
        gate = anyio.Event()
        gates.append(gate)
        yield "before"
        await gate.wait()
        yield "after"

    return app


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    with anyio.move_on_after(10):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


def of_type(events: list[Event], kind: EventType) -> list[dict[str, object]]:
    return [e.data for e in events if e.type is kind]


async def test_a_graceful_stop_gives_the_attempt_back(stores: StoreMaker) -> None:
    gates: list[anyio.Event] = []
    app = held_app(gates)
    first = Engine(app, stores(), shutdown_grace=0.2)
    async with anyio.create_task_group() as tg:
        await tg.start(first.serve)
        job = (await first.jobs.submit(OWNER, "held", {})).job
        await wait_for(lambda: len(gates) == 1, "the first run to start")
        running = await first.jobs.get(OWNER, job.id)
        assert running.attempts == 1
        await first.stop()  # the grace runs out with the job at its gate

    second = Engine(app, stores())
    async with anyio.create_task_group() as tg:
        await tg.start(second.serve)
        back = await second.jobs.get(OWNER, job.id)
        assert back.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        await wait_for(lambda: len(gates) == 2, "the second run to start")
        gates[1].set()
        with anyio.fail_after(10):
            done = await second.jobs.wait(OWNER, job.id)
        events = await second.jobs.read_events(OWNER, job.id)
        await second.stop()

    assert done.status is JobStatus.SUCCEEDED and done.attempts == 1
    assert [s["attempt"] for s in of_type(events, EventType.STARTED)] == [1, 1]
    [retrying] = of_type(events, EventType.RETRYING)
    assert retrying["attempt"] == 1 and retrying["next_attempt"] == 1
    assert retrying["counted"] is False
    assert retrying["reason"] == "worker shut down before the job finished"


async def test_a_lost_worker_uses_up_its_attempt(stores: StoreMaker) -> None:
    gates: list[anyio.Event] = []
    engine = Engine(held_app(gates), stores(), shutdown_grace=1.0)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        job = (await engine.jobs.submit(OWNER, "held", {})).job
        await wait_for(lambda: len(gates) == 1, "the first run to start")
        # To the store, the worker is gone: its lease lapsed (what kill -9 leads to).
        await engine.store.housekeep(time.time() + 3600)
        await wait_for(lambda: len(gates) == 2, "the job's second run to start")
        gates[0].set()  # the lost run wakes, fenced off
        gates[1].set()
        with anyio.fail_after(10):
            done = await engine.jobs.wait(OWNER, job.id)
        events = await engine.jobs.read_events(OWNER, job.id)
        await engine.stop()

    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
    assert [s["attempt"] for s in of_type(events, EventType.STARTED)] == [1, 2]
    [retrying] = of_type(events, EventType.RETRYING)
    assert retrying["attempt"] == 1 and retrying["next_attempt"] == 2
    assert retrying["counted"] is True
    assert "lease lapsed" in str(retrying["reason"])
