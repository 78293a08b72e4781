"""``JobLog`` on its own, against a real SQLite store: what a running job writes reaches
its log in the order it happened, a burst costs one store call, a producer far ahead of
the store waits for it, and a run whose lease was taken writes nothing more."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest

from genq.errors import LeaseLost, StoreUnavailable
from genq.joblog import EVENT_OVERHEAD, JobLog
from genq.models import EventType, Lease
from genq.store.base import NewEvent
from genq.store.sqlite import SQLiteStore
from tests.store.store_contract import claim_one, events_until, submit

pytestmark = pytest.mark.anyio


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the ``append_events`` calls made to it, and
    answers them StoreUnavailable while ``down``, as the Redis store does once
    ``retry_for`` has passed (and its circuit is open)."""

    appends: list[int]
    down = False

    async def append_events(self, job_id: str, events: Sequence[NewEvent],
                            lease: Lease) -> int:
        if self.down:
            raise StoreUnavailable("the store is down (test)")
        self.appends.append(len(events))
        return await super().append_events(job_id, events, lease)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = CountingStore(tmp_path / "log.sqlite3")
    opened.appends = []
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def texts(events: list[tuple[EventType, dict[str, object]]]) -> list[object]:
    return [data.get("chunk", data.get("message")) for _, data in events]


async def logged(store: SQLiteStore, job_id: str,
                 count: int) -> list[tuple[EventType, dict[str, object]]]:
    """The job's ``count`` events after ``started``, as (type, data), once committed."""
    events = await events_until(store, job_id, 2 + count)
    assert [e.type for e in events[:2]] == [EventType.QUEUED, EventType.STARTED]
    return [(e.type, e.data) for e in events[2:]]


async def test_single_adds_and_batches_keep_their_order(store: CountingStore) -> None:
    job = await submit(store)
    running = await claim_one(store)
    log = JobLog(store, job.id, running.lease)
    log.add(EventType.LOG, {"message": "a"})
    await log.add_many([(EventType.OUTPUT, {"chunk": "b"}), (EventType.OUTPUT, {"chunk": "c"})])
    log.add(EventType.LOG, {"message": "d"})
    await log.drain()
    assert texts(await logged(store, job.id, 4)) == ["a", "b", "c", "d"]


async def test_a_burst_is_one_store_call(store: CountingStore) -> None:
    job = await submit(store)
    running = await claim_one(store)
    log = JobLog(store, job.id, running.lease)
    for i in range(500):  # all on the loop, before the flusher task gets a turn
        log.add(EventType.OUTPUT, {"chunk": str(i)})
    await log.drain()
    assert store.appends == [500]
    assert texts(await logged(store, job.id, 500)) == [str(i) for i in range(500)]


async def test_a_producer_far_ahead_waits_for_the_store(store: CountingStore) -> None:
    job = await submit(store)
    running = await claim_one(store)
    log = JobLog(store, job.id, running.lease)
    big = [(EventType.OUTPUT, {"chunk": f"{i}"}) for i in range(10_000)]
    await log.add_many(big)
    # add_many returned only after handing them to the store itself, not to a backlog
    # that would grow as fast as the producer.
    assert sum(store.appends) == 10_000
    await log.drain()
    assert texts(await logged(store, job.id, 10_000)) == [str(i) for i in range(10_000)]


async def test_a_reclaimed_job_refuses_the_old_run(store: CountingStore) -> None:
    job = await submit(store, max_attempts=2)  # reclaimed for a second attempt
    first = await claim_one(store, worker="w1", lease=0.2)
    lost: list[str] = []
    log = JobLog(store, job.id, first.lease, on_lost=lambda: lost.append(job.id))
    await log.add_many([(EventType.OUTPUT, {"chunk": "mine"})])
    await log.drain()
    await anyio.sleep(0.3)
    await store.housekeep(time.time())  # the lease lapsed: the job is queued again
    second = await claim_one(store, worker="w2")
    assert second.lease != first.lease

    log.add(EventType.OUTPUT, {"chunk": "stale"})
    with pytest.raises(LeaseLost):
        await log.drain()
    assert lost == [job.id]  # told once
    with pytest.raises(LeaseLost):
        await log.add_many([(EventType.OUTPUT, {"chunk": "later"})])
    log.add(EventType.LOG, {"message": "dropped"})  # silently dropped, no new write
    after = await events_until(store, job.id, second.last_event_id)
    assert [e.type for e in after][-2:] == [EventType.RETRYING, EventType.STARTED]
    assert [e.data["chunk"] for e in after if e.type is EventType.OUTPUT] == ["mine"]
    assert (await store.get_job(job.id)).last_event_id == second.last_event_id
    assert lost == [job.id]


async def test_events_made_while_the_store_is_down_are_written_once_it_is_back(
        store: CountingStore, caplog: pytest.LogCaptureFixture) -> None:
    job = await submit(store)
    running = await claim_one(store)
    log = JobLog(store, job.id, running.lease)
    await log.add_many([(EventType.OUTPUT, {"chunk": "0"})])
    await log.drain()
    store.down = True
    for i in range(1, 50):  # a stream going on through the outage
        if i % 10 == 0:
            log.add(EventType.PROGRESS, {"progress": i / 50})
        await log.add_many([(EventType.OUTPUT, {"chunk": str(i)})])
        await anyio.sleep(0.005)
    with anyio.move_on_after(0.3):
        await log.drain()  # waits for the store, rather than failing or dropping
        raise AssertionError("drain returned while the store was down")
    store.down = False
    with anyio.fail_after(10):
        await log.drain()
    written = await logged(store, job.id, 54)
    assert [d["chunk"] for t, d in written if t is EventType.OUTPUT] == [
        str(i) for i in range(50)]  # every chunk, once, in order
    assert [d["progress"] for t, d in written if t is EventType.PROGRESS] == [
        0.2, 0.4, 0.6, 0.8]
    del log
    gc.collect()  # a failed flusher task nobody awaited would be reported now
    assert "Task exception was never retrieved" not in caplog.text


async def test_past_its_byte_bound_the_producer_waits_out_the_outage(
        store: CountingStore) -> None:
    job = await submit(store)
    running = await claim_one(store)
    log = JobLog(store, job.id, running.lease, max_pending_bytes=4 * EVENT_OVERHEAD + 40)
    store.down = True
    chunks = [f"chunk {i:02}" for i in range(8)]
    producer_at = 0

    async def produce() -> None:
        nonlocal producer_at
        for chunk in chunks:
            await log.add_many([(EventType.OUTPUT, {"chunk": chunk})])
            producer_at += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await anyio.sleep(0.5)
        paused_at = producer_at
        store.down = False
    await log.drain()
    # 4 events (256 + 8 bytes each) fit under the bound; the 5th reaches it and its
    # producer waits for the store: paused, nothing dropped, nothing raised.
    assert paused_at == 4
    written = await logged(store, job.id, len(chunks))
    assert [d["chunk"] for _, d in written] == chunks
