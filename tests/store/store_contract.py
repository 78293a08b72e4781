"""The contract every ``genq.store.base.Store`` implementation must honour.

A backend's test module subclasses ``StoreContract`` and provides one fixture,
``store_factory``: an async callable that returns a new, opened, empty store, and that
closes every store it made when the test ends::

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store_factory(self, anyio_backend) -> AsyncIterator[StoreFactory]:
            ...

Everything here goes through the public Store protocol only, and asserts what a user
of genq would notice: the order in which jobs run, the positions they are told, the
errors they get, and an event log with no gap, no duplicate and nothing lost.

Writes that the protocol does not promise to be durable on return (``append_events``,
``claim``) are observed through ``follow``, which only delivers committed events.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from genq.errors import (
    IdempotencyConflict,
    JobNotFound,
    LeaseLost,
    QueueFull,
    ResultTimeout,
    UnknownTicket,
)
from genq.jsoncodec import compact_json
from genq.models import Event, EventType, Job, JobStatus, Lease, WorkerInfo, new_job_id
from genq.store import rules
from genq.store.base import Store, SubmitPolicy
from tests.store.routing_contract import RoutingContract
from tests.store.sharing_contract import SharingContract

StoreFactory = Callable[..., Awaitable[Store]]  # keyword options of the constructor

WAIT = 10.0  # generous limit for anything that should happen "soon"
LEASE = 30.0
OPEN = SubmitPolicy()


def make_job(function: str = "render", **fields: Any) -> Job:
    fields.setdefault("input", {"prompt": "a cat"})
    return Job(id=new_job_id(), function=function, **fields)


async def submit(store: Store, function: str = "render", policy: SubmitPolicy = OPEN,
                 **fields: Any) -> Job:
    submitted = await store.create_job(make_job(function, **fields), policy)
    assert submitted.created and submitted.reason == "new"
    return submitted.job


async def claim_one(store: Store, function: str = "render", worker: str = "w1",
                    lease: float = LEASE) -> Job:
    job = await store.claim([function], worker, lease)
    assert job is not None, f"expected a claimable {function!r} job"
    return job


async def events_until(store: Store, job_id: str, last_id: int, after: int = 0) -> list[Event]:
    """Committed events after ``after`` up to (at least) ``last_id``, via ``follow``."""
    seen: list[Event] = []
    if last_id <= after:
        return seen
    with anyio.fail_after(WAIT):
        stream = store.follow(job_id, after)
        try:
            async for batch in stream:
                seen.extend(batch)
                if seen[-1].id >= last_id or seen[-1].terminal:
                    break
        finally:
            await _aclose(stream)
    return seen


async def follow_all(store: Store, job_id: str, after: int = 0) -> list[list[Event]]:
    """Every batch ``follow`` yields until it ends on its own."""
    batches: list[list[Event]] = []
    with anyio.fail_after(WAIT):
        async for batch in store.follow(job_id, after):
            batches.append(batch)
    return batches


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def shape(events: list[Event]) -> list[tuple[int, str]]:
    return [(e.id, e.type.value) for e in events]


@pytest.mark.anyio
class StoreContract(RoutingContract, SharingContract):
    """Tests every Store must pass. Subclasses provide the ``store_factory`` fixture.
    Warm routing's are in routing_contract.py, fair share's and quotas' in
    sharing_contract.py."""

    @pytest.fixture
    async def store_factory(self, anyio_backend: Any) -> AsyncIterator[StoreFactory]:
        raise NotImplementedError("a backend's test class must provide store_factory")
        yield  # pragma: no cover

    @pytest.fixture
    async def store(self, store_factory: StoreFactory) -> Store:
        return await store_factory()

    # -- submission ------------------------------------------------------------------
    async def test_create_job_logs_queued_event_with_position(self, store: Store) -> None:
        first = await submit(store, input={"prompt": "one"}, owner="alice")
        second = await submit(store, input={"prompt": "two"}, owner="alice")

        assert first.status is JobStatus.QUEUED and first.attempts == 0
        stored = await store.get_job(first.id)
        assert stored is not None
        assert (stored.function, stored.input, stored.owner) == ("render", {"prompt": "one"},
                                                                  "alice")
        assert stored.status is JobStatus.QUEUED and stored.last_event_id == 1
        # Durable on return: the queued event is readable at once.
        [queued] = await store.read_events(first.id)
        assert (queued.id, queued.type, queued.data["position"]) == (1, EventType.QUEUED, 1)
        [queued] = await store.read_events(second.id)
        assert queued.data["position"] == 2
        assert await store.queue_position(first.id) == 1
        assert await store.queue_position(second.id) == 2
        assert await store.get_job(new_job_id()) is None
        assert await store.queue_position(new_job_id()) is None

    async def test_positions_follow_priority(self, store: Store) -> None:
        low1 = await submit(store)
        low2 = await submit(store)
        high1 = await submit(store, priority=5)
        low3 = await submit(store)
        high2 = await submit(store, priority=5)
        other = await submit(store, "caption")

        told = {j.id: (await store.read_events(j.id))[0].data["position"]
                for j in (low1, low2, high1, low3, high2, other)}
        # Each job is told its place at submission: behind everything of equal or
        # higher priority, ahead of everything lower; other functions do not count.
        assert [told[j.id] for j in (low1, low2, high1, low3, high2, other)] == [
            1, 2, 1, 4, 2, 1]
        now = [await store.queue_position(j.id) for j in (high1, high2, low1, low2, low3)]
        assert now == [1, 2, 3, 4, 5]
        assert await store.queue_position(other.id) == 1

        claimed = await claim_one(store)
        assert claimed.id == high1.id
        assert await store.queue_position(high1.id) is None  # running: not queued
        now = [await store.queue_position(j.id) for j in (high2, low1, low2, low3)]
        assert now == [1, 2, 3, 4]

    async def test_positions_match_the_claim_order_after_random_changes(
            self, store: Store) -> None:
        """queue_position against a brute-force ordering (priority, then arrival) after
        random submits, cancels, claims, re-queues, retries that wait out a delay (no
        place), ends and expiries, with mixed priorities over two functions."""
        rng = random.Random(20240610)
        t0 = time.time()
        arrival = itertools.count()
        ready: dict[str, dict[str, tuple[int, int]]] = {"render": {}, "caption": {}}
        info: dict[str, tuple[str, int, bool]] = {}  # id -> (function, priority, expires?)
        running: dict[str, Lease] = {}
        waiting: set[str] = set()  # retries waiting out their delay
        started: set[str] = set()

        def order(fn: str) -> list[str]:
            return [j for j, _ in sorted(ready[fn].items(), key=lambda kv: kv[1])]

        async def check() -> None:
            for fn in ready:
                assert [await store.queue_position(j) for j in order(fn)] == list(
                    range(1, len(ready[fn]) + 1))
            for job_id in [*running, *waiting]:
                assert await store.queue_position(job_id) is None

        for step in range(260):
            fn = rng.choice(["render", "render", "caption"])
            roll = rng.random()
            if roll < 0.42:
                priority = rng.choice([0, 0, 0, 1, 5, -3])
                expires = rng.random() < 0.2
                job = await submit(store, fn, priority=priority,
                                   expires_at=t0 + 600 if expires else None)
                ahead = sum(1 for p, _ in ready[fn].values() if p <= -priority)
                [queued] = await store.read_events(job.id)
                assert queued.data["position"] == ahead + 1
                ready[fn][job.id] = (-priority, next(arrival))
                info[job.id] = (fn, priority, expires)
            elif roll < 0.55 and (queued_ids := [*ready[fn], *waiting]):
                victim = rng.choice(sorted(queued_ids))
                assert (await store.cancel(victim)).status is JobStatus.CANCELLED
                ready[fn].pop(victim, None)
                waiting.discard(victim)
            elif roll < 0.72:
                claimed = await store.claim([fn], "w1", 3600)
                expected = order(fn)
                assert (claimed.id if claimed else None) == (expected[0] if expected else None)
                if claimed is not None:
                    del ready[fn][claimed.id]
                    running[claimed.id] = claimed.lease
                    started.add(claimed.id)
            elif roll < 0.92 and running:
                job_id = rng.choice(sorted(running))
                lease = running.pop(job_id)
                job_fn, priority, _ = info[job_id]
                action = rng.choice(["requeue", "retry", "finish"])
                if action == "requeue":  # back at once, behind its priority's jobs
                    await store.requeue(job_id, "shutdown", lease)
                    ready[job_fn][job_id] = (-priority, next(arrival))
                elif action == "retry":  # waits an hour: queued, but in no line yet
                    await store.retry(job_id, 3600, {"type": "E", "message": "m"}, lease)
                    waiting.add(job_id)
                else:
                    await store.finish(job_id, JobStatus.SUCCEEDED, lease=lease)
            elif roll >= 0.92 and step > 130:
                await store.housekeep(t0 + 1200)  # expires never-started jobs that may
                for line in ready.values():
                    for job_id in [j for j in line if info[j][2] and j not in started]:
                        del line[job_id]
            if step % 10 == 0:
                await check()
        await check()
        assert sum(len(line) for line in ready.values()) > 5 and waiting and running

    async def test_queue_depth_counts_queued_jobs_per_function(self, store: Store) -> None:
        assert await store.queue_depth("render") == 0
        jobs = [await submit(store) for _ in range(3)]
        await submit(store, "caption")
        assert await store.queue_depth("render") == 3
        assert await store.queue_depth("caption") == 1
        await claim_one(store)
        assert await store.queue_depth("render") == 2
        await store.cancel(jobs[2].id)
        assert await store.queue_depth("render") == 1
        assert await store.queue_depth("nothing") == 0

    async def test_max_queue_refuses_with_retry_after(self, store: Store) -> None:
        policy = SubmitPolicy(max_queue=2, retry_after=7)
        await submit(store, "upscale", policy)
        await submit(store, "upscale", policy)
        refused = make_job("upscale")
        with pytest.raises(QueueFull) as caught:
            await store.create_job(refused, policy)
        err = caught.value
        assert err.retry_after == 7 and err.status == 429
        assert "upscale" in str(err) and "2" in str(err)
        assert err.to_dict()["code"] == "queue_full"
        assert err.detail["function"] == "upscale"
        # Nothing was stored for the refused job, and the queue is as it was.
        assert await store.get_job(refused.id) is None
        assert await store.queue_depth("upscale") == 2
        # Other functions have their own queues.
        await submit(store, "caption", policy)
        # Once one starts, there is room again.
        await claim_one(store, "upscale")
        await submit(store, "upscale", policy)
        assert await store.queue_depth("upscale") == 2

    async def test_idempotency_key_returns_the_same_job(self, store: Store) -> None:
        first = await submit(store, idempotency_key="req-1", owner="alice")
        again = make_job(idempotency_key="req-1", owner="alice")
        answer = await store.create_job(again, OPEN)
        assert (answer.created, answer.reason, answer.job.id) == (False, "idempotent", first.id)
        assert await store.get_job(again.id) is None  # no second job
        assert await store.queue_depth("render") == 1
        assert len(await store.read_events(first.id)) == 1  # and no second queued event

        # Still the same job once it has finished.
        await claim_one(store)
        await store.finish(first.id, JobStatus.SUCCEEDED, result="done")
        answer = await store.create_job(make_job(idempotency_key="req-1", owner="alice"), OPEN)
        assert answer.job.id == first.id and answer.job.status is JobStatus.SUCCEEDED
        assert answer.job.result == "done"

        # Keys are per owner.
        bob = await store.create_job(make_job(idempotency_key="req-1", owner="bob"), OPEN)
        assert bob.created and bob.job.id != first.id

    async def test_idempotency_key_reused_for_other_input_conflicts(self, store: Store) -> None:
        first = await submit(store, idempotency_key="req-2")
        with pytest.raises(IdempotencyConflict) as caught:
            await store.create_job(make_job(idempotency_key="req-2",
                                            input={"prompt": "a dog"}), OPEN)
        assert caught.value.status == 409 and caught.value.detail["job_id"] == first.id
        assert "req-2" in str(caught.value)
        with pytest.raises(IdempotencyConflict):
            await store.create_job(make_job("caption", idempotency_key="req-2"), OPEN)
        assert await store.queue_depth("render") == 1
        assert await store.queue_depth("caption") == 0

    async def test_cache_hit_creates_a_succeeded_job(self, store: Store) -> None:
        policy = SubmitPolicy(cache_ttl=3600.0)
        original = await submit(store, policy=policy, cache_key="k1")
        await claim_one(store)
        await store.finish(original.id, JobStatus.SUCCEEDED, result={"image": "cat.png"})

        repeat = make_job(cache_key="k1")
        answer = await store.create_job(repeat, policy)
        assert (answer.created, answer.reason) == (False, "cached")
        hit = answer.job
        assert hit.id == repeat.id != original.id  # a job of its own, already finished
        assert hit.status is JobStatus.SUCCEEDED and hit.result == {"image": "cat.png"}
        assert await store.queue_depth("render") == 0
        assert await store.claim(["render"], "w1", LEASE) is None
        [event] = await store.read_events(hit.id)
        assert event.type is EventType.SUCCEEDED
        assert event.data["cached_from"] == original.id
        assert event.data["result"] == {"image": "cat.png"}
        stored = await store.get_job(hit.id)
        assert stored is not None and stored.status is JobStatus.SUCCEEDED
        assert stored.result == {"image": "cat.png"}
        with anyio.fail_after(WAIT):
            done = await store.wait_terminal(hit.id, timeout=WAIT)
        assert done.status is JobStatus.SUCCEEDED
        assert [shape(b) for b in await follow_all(store, hit.id)] == [[(1, "succeeded")]]

        # A different key, or no cache policy, is new work.
        assert (await store.create_job(make_job(cache_key="k2"), policy)).created
        assert (await store.create_job(make_job(cache_key="k1"), OPEN)).created

    async def test_cache_never_serves_a_failed_job(self, store: Store) -> None:
        policy = SubmitPolicy(cache_ttl=3600.0)
        failed = await submit(store, policy=policy, cache_key="k")
        await claim_one(store)
        await store.finish(failed.id, JobStatus.FAILED, error={"type": "OOM", "message": "x"})
        answer = await store.create_job(make_job(cache_key="k"), policy)
        assert answer.created and answer.job.status is JobStatus.QUEUED

    async def test_dedupe_joins_the_live_job(self, store: Store) -> None:
        policy = SubmitPolicy(dedupe=True)
        live = await submit(store, policy=policy, cache_key="same", owner="alice")

        answer = await store.create_job(make_job(cache_key="same", owner="alice"), policy)
        assert (answer.created, answer.reason, answer.job.id) == (False, "deduplicated", live.id)
        assert await store.queue_depth("render") == 1

        await claim_one(store)  # still joined while running
        answer = await store.create_job(make_job(cache_key="same", owner="alice"), policy)
        assert answer.reason == "deduplicated" and answer.job.id == live.id
        assert answer.job.status is JobStatus.RUNNING

        other_owner = await store.create_job(make_job(cache_key="same", owner="bob"), policy)
        assert other_owner.created

        await store.finish(live.id, JobStatus.FAILED, error={"type": "E", "message": "m"})
        after = await store.create_job(make_job(cache_key="same", owner="alice"), policy)
        assert after.created and after.job.id != live.id  # a finished job is not joined

    async def test_each_submission_of_a_shared_job_lets_go_on_its_own(
            self, store: Store) -> None:
        """Dedupe tickets: a job is cancelled once every submission holding it has."""
        policy = SubmitPolicy(dedupe=True)

        def ticketed() -> Job:
            return make_job(cache_key="same", ticket=new_job_id())

        first = await store.create_job(ticketed(), policy)
        second = await store.create_job(ticketed(), policy)
        third = await store.create_job(ticketed(), policy)
        tickets = [first.ticket, second.ticket, third.ticket]
        assert None not in tickets and len(set(tickets)) == 3
        assert {second.job.id, third.job.id} == {first.job.id}
        job_id = first.job.id

        # Queued: the first two let go (the second twice: a retried call), it stays.
        for ticket in (tickets[0], tickets[1], tickets[1]):
            left = await store.cancel(job_id, ticket=ticket)
            assert left.status is JobStatus.QUEUED and not left.cancel_requested
        with pytest.raises(UnknownTicket) as unknown:
            await store.cancel(job_id, ticket=new_job_id())
        assert unknown.value.status == 404 and job_id in str(unknown.value)
        assert (await claim_one(store)).id == job_id  # still runs, for the third

        # A fourth joins the running job; then the third and fourth let go: cancelled.
        fourth = await store.create_job(ticketed(), policy)
        assert fourth.job.id == job_id and fourth.reason == "deduplicated"
        still = await store.cancel(job_id, ticket=third.ticket)
        assert still.status is JobStatus.RUNNING and not still.cancel_requested
        asked = await store.cancel(job_id, ticket=fourth.ticket)
        assert asked.status is JobStatus.RUNNING and asked.cancel_requested
        # Being cancelled, it takes no new submission with it.
        fifth = await store.create_job(ticketed(), policy)
        assert fifth.created and fifth.job.id != job_id and fifth.ticket is not None
        ended = await store.finish(job_id, JobStatus.CANCELLED, lease=asked.lease)
        assert ended.status is JobStatus.CANCELLED
        # A ticket of a finished job: nothing to let go of; an unknown one still refused.
        assert (await store.cancel(job_id, ticket=first.ticket)).status is JobStatus.CANCELLED
        with pytest.raises(UnknownTicket):
            await store.cancel(job_id, ticket=new_job_id())

    async def test_a_cancel_without_a_ticket_ends_a_shared_job(self, store: Store) -> None:
        policy = SubmitPolicy(dedupe=True)
        first = await store.create_job(make_job(cache_key="k", ticket=new_job_id()), policy)
        await store.create_job(make_job(cache_key="k", ticket=new_job_id()), policy)
        cancelled = await store.cancel(first.job.id)  # the job page's Cancel button
        assert cancelled.status is JobStatus.CANCELLED

    async def test_an_idempotent_answer_gives_the_first_submissions_ticket(
            self, store: Store) -> None:
        first = await store.create_job(
            make_job(idempotency_key="req-1", ticket=new_job_id()), OPEN)
        again = await store.create_job(
            make_job(idempotency_key="req-1", ticket=new_job_id()), OPEN)
        assert again.reason == "idempotent" and again.ticket == first.ticket
        assert (await store.cancel(first.job.id, ticket=again.ticket)).status \
            is JobStatus.CANCELLED  # its only holder let go

    async def test_dedupe_never_hands_out_a_finished_job(self, store: Store) -> None:
        policy = SubmitPolicy(dedupe=True)
        live = await submit(store, policy=policy, cache_key="same")
        await claim_one(store)

        async def fail() -> None:
            await store.finish(live.id, JobStatus.FAILED, error={"type": "OOM", "message": ""})

        async with anyio.create_task_group() as tg:
            tg.start_soon(fail)
            await anyio.lowlevel.checkpoint()  # the failure is being recorded
            answer = await store.create_job(make_job(cache_key="same"), policy)
        # Joining the job while it still runs is fine; being handed its failure is not.
        assert answer.created or answer.job.status is JobStatus.RUNNING
        if answer.created:
            assert answer.job.status is JobStatus.QUEUED and answer.job.id != live.id

    # -- claiming --------------------------------------------------------------------
    async def test_claim_takes_priority_then_fifo(self, store: Store) -> None:
        a = await submit(store)
        b = await submit(store)
        c = await submit(store, priority=5)
        d = await submit(store, priority=5)
        e = await submit(store, priority=-1)
        f = await submit(store)
        order = []
        while (job := await store.claim(["render"], "w1", LEASE)) is not None:
            order.append(job.id)
        assert order == [c.id, d.id, a.id, b.id, f.id, e.id]

    async def test_claim_considers_only_the_given_functions(self, store: Store) -> None:
        caption = await submit(store, "caption", priority=9)
        render = await submit(store, "render")
        assert await store.claim([], "w1", LEASE) is None
        assert await store.claim(["unknown"], "w1", LEASE) is None
        got = await claim_one(store, "render")
        assert got.id == render.id
        assert await store.claim(["render"], "w1", LEASE) is None
        waiting = await store.get_job(caption.id)
        assert waiting is not None and waiting.status is JobStatus.QUEUED
        both = await store.claim(["render", "caption"], "w1", LEASE)
        assert both is not None and both.id == caption.id

    async def test_claim_starts_the_job(self, store: Store) -> None:
        job = await submit(store, max_attempts=3)
        before = time.time()
        claimed = await store.claim(["render"], "worker-7", LEASE)
        assert claimed is not None and claimed.id == job.id
        assert claimed.status is JobStatus.RUNNING and claimed.attempts == 1
        assert claimed.worker_id == "worker-7"
        assert claimed.started_at is not None and claimed.started_at >= before - 1
        stored = await store.get_job(job.id)
        assert stored is not None and stored.status is JobStatus.RUNNING
        assert stored.attempts == 1
        events = await events_until(store, job.id, 2)
        assert shape(events) == [(1, "queued"), (2, "started")]
        assert events[1].data["attempt"] == 1
        assert await store.queue_position(job.id) is None
        assert await store.queue_depth("render") == 0

    # -- the event log ---------------------------------------------------------------
    async def test_append_events_assigns_consecutive_ids(self, store: Store) -> None:
        job = await submit(store)
        lease = (await claim_one(store)).lease  # events 1 (queued) and 2 (started)
        expected = 2
        for size in (1, 3, 50, 1, 7):
            batch = [(EventType.OUTPUT, {"chunk": f"c{expected + i + 1}"}) for i in range(size)]
            last = await store.append_events(job.id, batch, lease)
            expected += size
            assert last == expected
        assert await store.append_events(job.id, [], lease) == expected  # nothing to add
        await store.append_events(job.id, [(EventType.PROGRESS, {"fraction": 0.5}),
                                           (EventType.LOG, {"message": "half way"})], lease)
        expected += 2
        final = await store.finish(job.id, JobStatus.SUCCEEDED, result="ok", lease=lease)
        expected += 1
        assert final.last_event_id == expected

        events = await store.read_events(job.id)
        assert [e.id for e in events] == list(range(1, expected + 1))
        outputs = [e for e in events if e.type is EventType.OUTPUT]
        assert [e.data["chunk"] for e in outputs] == [f"c{e.id}" for e in outputs]
        assert len(outputs) == 62
        assert [e.type for e in events[-3:]] == [EventType.PROGRESS, EventType.LOG,
                                                 EventType.SUCCEEDED]
        assert all(e.job_id == job.id for e in events)

        with pytest.raises(LeaseLost):  # the log of a finished job is closed
            await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": "late"})], lease)

    async def test_read_events_after_returns_exactly_the_later_ones(self, store: Store) -> None:
        job = await submit(store)
        lease = (await claim_one(store)).lease
        await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": i}) for i in range(20)],
                                  lease)
        await store.finish(job.id, JobStatus.SUCCEEDED, lease=lease)
        everything = await store.read_events(job.id)
        assert len(everything) == 23
        for k in (0, 1, 2, 10, 22, 23, 50):
            later = await store.read_events(job.id, after=k)
            assert later == everything[k:]
        assert await store.read_events(job.id, after=5, limit=4) == everything[5:9]
        assert await store.read_events(new_job_id()) == []

    async def test_pages_of_the_log_are_bounded_by_bytes(self, store: Store) -> None:
        """A page ends with the event whose data reaches ``max_bytes``; paging on from
        each page's last id reads the whole log once, and so does a follower of the
        finished job."""
        job = await submit(store)
        lease = (await claim_one(store)).lease
        sizes = [10, 300_000, 10, 10, 300_000, 300_000, 1_500_000, 10, 300_000] + [10] * 50
        await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": "x" * n})
                                           for n in sizes], lease)
        await store.finish(job.id, JobStatus.SUCCEEDED, lease=lease)
        everything = await store.read_events(job.id, max_bytes=1 << 30)
        assert len(everything) == 2 + len(sizes) + 1
        assert all(e.size == len(compact_json(e.data)) for e in everything)
        pages, after = [], 0
        while page := await store.read_events(job.id, after, max_bytes=700_000):
            assert sum(e.size for e in page[:-1]) < 700_000
            pages.append(page)
            after = page[-1].id
        assert [e for page in pages for e in page] == everything
        # queued, started, 10, 300k, 10, 10, 300k, 300k (reaches 700k) | 1.5M (alone
        # reaches it) | 10, 300k, 10 x 50, succeeded
        assert [len(page) for page in pages] == [8, 1, 53]
        assert await events_until(store, job.id, everything[-1].id) == everything

    async def test_follow_delivers_live_events_without_gap_or_duplicate(
            self, store: Store) -> None:
        job = await submit(store)
        lease = (await claim_one(store)).lease
        followers: list[list[list[Event]]] = [[], [], []]

        async def follow(into: list[list[Event]]) -> None:
            async for batch in store.follow(job.id):
                into.append(batch)

        async def write() -> None:
            for i in range(80):
                await store.append_events(job.id, [
                    (EventType.OUTPUT, {"chunk": f"{i}.{j}"}) for j in range(1 + i % 7)], lease)
                if i % 3 == 0:
                    await anyio.lowlevel.checkpoint()
                if i % 20 == 0:
                    await anyio.sleep(0.005)
            await store.finish(job.id, JobStatus.SUCCEEDED, result="fin", lease=lease)

        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                for into in followers:
                    tg.start_soon(follow, into)
                await anyio.sleep(0.01)  # followers are waiting before the writer starts
                tg.start_soon(write)
            # every follower ended on its own, after the terminal event

        expected_chunks = [f"{i}.{j}" for i in range(80) for j in range(1 + i % 7)]
        total = 2 + len(expected_chunks) + 1
        for batches in followers:
            assert all(batches), "follow never yields an empty batch"
            events = [e for b in batches for e in b]
            assert [e.id for e in events] == list(range(1, total + 1))
            assert [e.data["chunk"] for e in events if e.type is EventType.OUTPUT] \
                == expected_chunks
            assert events[-1].type is EventType.SUCCEEDED and events[-1].data["result"] == "fin"

    async def test_follow_from_the_middle(self, store: Store) -> None:
        job = await submit(store)
        lease = (await claim_one(store)).lease
        await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": i}) for i in range(10)],
                                  lease)
        await events_until(store, job.id, 12)  # committed: 1 queued, 2 started, 3..12 output

        got: list[Event] = []

        async def follow_from(after: int) -> None:
            async for batch in store.follow(job.id, after):
                got.extend(batch)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow_from, 7)
                await anyio.sleep(0.01)
                await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": i})
                                                   for i in range(10, 15)], lease)
                await store.finish(job.id, JobStatus.SUCCEEDED, lease=lease)
        assert [e.id for e in got] == list(range(8, 19))
        assert [e.data.get("chunk") for e in got[:-1]] == list(range(5, 15))

        # The same from a finished log, from several places.
        everything = await store.read_events(job.id)
        for k in (0, 7, 17):
            batches = await follow_all(store, job.id, after=k)
            assert [e for b in batches for e in b] == everything[k:]
        assert await follow_all(store, job.id, after=18) == []  # nothing more: ends at once

    async def test_follow_of_an_unknown_job_raises(self, store: Store) -> None:
        with pytest.raises(JobNotFound):
            await follow_all(store, new_job_id())

    async def test_many_followers_joining_anywhere_get_the_rest_once(
            self, store: Store) -> None:
        """Followers from the start and followers resuming mid-stream (as a reconnect
        with Last-Event-ID), joining while the job writes: each gets every event after
        its cursor exactly once, in order, equal to the log as read, and ends after the
        terminal event."""
        job = await submit(store)
        lease = (await claim_one(store)).lease
        results: dict[int, tuple[int, list[Event]]] = {}

        async def follow(key: int, after: int) -> None:
            got: list[Event] = []
            async for batch in store.follow(job.id, after):
                assert batch, "follow never yields an empty batch"
                got.extend(batch)
            results[key] = (after, got)

        chunks = 240
        with anyio.fail_after(WAIT * 3):
            async with anyio.create_task_group() as tg:
                for key in range(12):
                    tg.start_soon(follow, key, 0)
                await anyio.sleep(0.01)
                for i in range(chunks):
                    await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": i})],
                                              lease)
                    if i % 20 == 0:
                        tg.start_soon(follow, 1000 + i, 0)
                        tg.start_soon(follow, 2000 + i, 2 + max(0, i - 7))
                        await anyio.sleep(0.002)
                    elif i % 5 == 0:
                        await anyio.lowlevel.checkpoint()
                await store.finish(job.id, JobStatus.SUCCEEDED, result="fin", lease=lease)
        everything = await store.read_events(job.id)
        assert [e.id for e in everything] == list(range(1, chunks + 4))
        assert len(results) == 12 + 2 * (chunks // 20)
        for after, got in results.values():
            assert got == everything[after:]

    async def test_a_follower_far_behind_still_gets_every_event_once(
            self, store: Store) -> None:
        """A follower that stops reading while the job writes far more than any buffer
        holds: when it reads again it gets the rest from the log, nothing lost or
        doubled, in order, then the end."""
        job = await submit(store)
        lease = (await claim_one(store)).lease
        await events_until(store, job.id, 2)
        stream = store.follow(job.id)
        got: list[Event] = []
        try:
            with anyio.fail_after(WAIT * 6):
                got.extend(await anext(stream))  # queued, started: read from the log
                await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": -1})],
                                          lease)
                got.extend(await anext(stream))  # following live now
                for i in range(50):  # 25,000 events while the follower reads nothing
                    await store.append_events(job.id, [
                        (EventType.OUTPUT, {"chunk": i * 500 + j}) for j in range(500)], lease)
                await store.finish(job.id, JobStatus.SUCCEEDED, lease=lease)
                async for batch in stream:
                    got.extend(batch)
        finally:
            await _aclose(stream)
        assert [e.id for e in got] == list(range(1, 25_005))
        assert [e.data["chunk"] for e in got[2:-1]] == list(range(-1, 25_000))
        assert got[-1].type is EventType.SUCCEEDED

    async def test_a_follower_past_the_end_of_a_live_job_ends_with_it(
            self, store: Store) -> None:
        job = await submit(store)
        lease = (await claim_one(store)).lease
        await events_until(store, job.id, 2)
        batches: list[list[Event]] = []

        async def follow() -> None:
            async for batch in store.follow(job.id, after=50):  # a cursor from elsewhere
                batches.append(batch)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await anyio.sleep(0.02)
                await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": 0})], lease)
                await store.finish(job.id, JobStatus.SUCCEEDED, lease=lease)
        assert batches == []  # nothing after id 50, and it ended with the job
        # A finished job's follower gets the rest of the log at once, then the end.
        assert shape([e for b in await follow_all(store, job.id, after=2) for e in b]) == [
            (3, "output"), (4, "succeeded")]

    async def test_wait_terminal_returns_the_finished_job(self, store: Store) -> None:
        job = await submit(store)
        await claim_one(store)
        results: list[Job] = []

        async def waiter() -> None:
            results.append(await store.wait_terminal(job.id, timeout=WAIT))

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                tg.start_soon(waiter)
                await anyio.sleep(0.02)
                assert results == []  # still running
                await store.finish(job.id, JobStatus.SUCCEEDED, result=[1, 2, 3])
        assert [(j.id, j.status, j.result) for j in results] == [
            (job.id, JobStatus.SUCCEEDED, [1, 2, 3])] * 2
        # Already finished: answered at once.
        done = await store.wait_terminal(job.id, timeout=0.01)
        assert done.status is JobStatus.SUCCEEDED and done.result == [1, 2, 3]
        with pytest.raises(JobNotFound):
            await store.wait_terminal(new_job_id(), timeout=1)

    async def test_wait_terminal_times_out(self, store: Store) -> None:
        queued = await submit(store)
        with pytest.raises(ResultTimeout) as caught:
            await store.wait_terminal(queued.id, timeout=0.05)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.status == 408 and queued.id in str(caught.value)
        # Timing out of waiting does not touch the job.
        still = await store.get_job(queued.id)
        assert still is not None and still.status is JobStatus.QUEUED
        running = await claim_one(store)
        with pytest.raises(ResultTimeout):
            await store.wait_terminal(running.id, timeout=0.05)
        still = await store.get_job(running.id)
        assert still is not None and still.status is JobStatus.RUNNING

    # -- ending a run ----------------------------------------------------------------
    @pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED,
                                        JobStatus.CANCELLED, JobStatus.EXPIRED])
    async def test_finish_records_the_terminal_state(self, store: Store,
                                                     status: JobStatus) -> None:
        job = await submit(store)
        lease = (await claim_one(store)).lease
        await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": "partial"})], lease)
        result = {"text": "hello"} if status is JobStatus.SUCCEEDED else None
        error = {"type": "ValueError", "message": "bad"} if status is JobStatus.FAILED else None
        finished = await store.finish(job.id, status, result=result, error=error,
                                      data={"reason": "because"}, lease=lease)

        assert finished.status is status and finished.finished_at is not None
        assert finished.result == result and finished.error == error
        assert finished.last_event_id == 4
        stored = await store.get_job(job.id)
        assert stored is not None
        assert (stored.status, stored.result, stored.error) == (status, result, error)
        assert stored.finished_at is not None and stored.last_event_id == 4
        events = await store.read_events(job.id)
        assert shape(events) == [(1, "queued"), (2, "started"), (3, "output"),
                                 (4, status.value)]
        terminal = events[-1]
        assert terminal.terminal and terminal.data["reason"] == "because"
        if status is JobStatus.SUCCEEDED:
            assert terminal.data["result"] == {"text": "hello"}
        if status is JobStatus.FAILED:
            assert terminal.data["error"] == error
        assert await store.queue_position(job.id) is None
        assert await store.claim(["render"], "w1", LEASE) is None
        assert (await store.wait_terminal(job.id, timeout=1)).status is status

    async def test_finish_is_once(self, store: Store) -> None:
        job = await submit(store)
        await claim_one(store)
        await store.finish(job.id, JobStatus.SUCCEEDED, result=1)
        again = await store.finish(job.id, JobStatus.FAILED, error={"type": "X", "message": ""})
        assert again.status is JobStatus.SUCCEEDED and again.result == 1
        assert shape(await store.read_events(job.id))[-1] == (3, "succeeded")
        assert len(await store.read_events(job.id)) == 3
        with pytest.raises(ValueError, match="terminal"):
            await store.finish(job.id, JobStatus.RUNNING)
        with pytest.raises(JobNotFound):
            await store.finish(new_job_id(), JobStatus.SUCCEEDED)

    async def test_retry_waits_for_its_delay(self, store: Store) -> None:
        job = await submit(store, max_attempts=3)
        lease = (await claim_one(store)).lease
        delay = 0.4
        retried_at = time.time()
        error = {"type": "ConnectionError", "message": "blip"}
        back = await store.retry(job.id, delay, error, lease)
        assert back.status is JobStatus.QUEUED and back.attempts == 1

        assert await store.claim(["render"], "w1", LEASE) is None  # not before the delay
        stored = await store.get_job(job.id)
        assert stored is not None and stored.status is JobStatus.QUEUED

        # Polled on purpose: claimability must not depend on any notification.
        with anyio.fail_after(WAIT):
            while (again := await store.claim(["render"], "w2", LEASE)) is None:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert time.time() >= retried_at + delay - 0.05
        assert again.id == job.id and again.attempts == 2 and again.worker_id == "w2"
        events = await events_until(store, job.id, 4)
        assert shape(events) == [(1, "queued"), (2, "started"), (3, "retrying"),
                                 (4, "started")]
        retrying = events[2].data
        assert (retrying["attempt"], retrying["next_attempt"]) == (1, 2)
        assert retrying["error"] == error
        assert retrying["delay"] == pytest.approx(delay, abs=0.01)
        assert events[3].data["attempt"] == 2

    async def test_work_is_announced_when_a_retry_delay_ends(self, store: Store) -> None:
        job = await submit(store, max_attempts=2)
        lease = (await claim_one(store)).lease
        woken = anyio.Event()

        def on_work() -> None:
            woken.set()

        unsubscribe = store.subscribe_work(on_work)
        try:
            await store.retry(job.id, 0.2, {"type": "E", "message": ""}, lease)
            # Like a worker: claim whenever told, and only when told.
            with anyio.fail_after(WAIT):
                while True:
                    await woken.wait()
                    woken = anyio.Event()
                    if (claimed := await store.claim(["render"], "w1", LEASE)) is not None:
                        break
            assert claimed.id == job.id and claimed.attempts == 2
        finally:
            unsubscribe()

    async def test_requeue_does_not_use_up_an_attempt(self, store: Store) -> None:
        job = await submit(store, max_attempts=1)
        first = await claim_one(store)
        assert first.attempts == 1
        back = await store.requeue(job.id, "worker shut down before the job finished",
                                   first.lease)
        assert back.status is JobStatus.QUEUED and back.attempts == 0
        assert await store.queue_position(job.id) == 1
        again = await claim_one(store)  # claimable at once
        assert again.id == job.id and again.attempts == 1
        events = await events_until(store, job.id, 4)
        assert shape(events) == [(1, "queued"), (2, "started"), (3, "retrying"),
                                 (4, "started")]
        assert events[2].data["reason"] == "worker shut down before the job finished"
        # The event names the run it is about, and that the next run has its number.
        assert (events[2].data["attempt"], events[2].data["next_attempt"]) == (1, 1)
        assert events[2].data["counted"] is False
        assert events[3].data["attempt"] == 1

    # -- leases and fencing ----------------------------------------------------------
    async def test_a_lapsed_lease_is_reclaimed_and_its_writes_refused(
            self, store: Store) -> None:
        job = await submit(store, max_attempts=3)
        stale = await claim_one(store, worker="w1", lease=0.05)
        await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": "first try"})],
                                  stale.lease)
        await anyio.sleep(0.1)  # w1 is paused past its lease
        await store.housekeep(time.time())

        reclaimed = await store.get_job(job.id)
        assert reclaimed is not None and reclaimed.status is JobStatus.QUEUED
        assert reclaimed.attempts == 1 and reclaimed.lease_token != stale.lease_token
        lapsed = (await store.read_events(job.id))[-1]
        assert lapsed.type is EventType.RETRYING and lapsed.data["counted"] is True
        assert (lapsed.data["attempt"], lapsed.data["next_attempt"]) == (1, 2)
        # The same worker claims it again: a new token, so the old run is still fenced off.
        fresh = await claim_one(store, worker="w1")
        assert fresh.id == job.id and fresh.attempts == 2
        assert fresh.lease_token not in (stale.lease_token, reclaimed.lease_token - 1)
        log_before = await events_until(store, job.id, 5)

        late = [(EventType.OUTPUT, {"chunk": "late"})]
        with pytest.raises(LeaseLost) as caught:
            await store.append_events(job.id, late, stale.lease)
        assert caught.value.status == 409 and job.id in str(caught.value)
        with pytest.raises(LeaseLost):
            await store.finish(job.id, JobStatus.SUCCEEDED, result="stale", lease=stale.lease)
        with pytest.raises(LeaseLost):
            await store.retry(job.id, 0.0, {"type": "E", "message": ""}, stale.lease)
        with pytest.raises(LeaseLost):
            await store.requeue(job.id, "shutdown", stale.lease)

        await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": "second try"})],
                                  fresh.lease)
        await store.finish(job.id, JobStatus.SUCCEEDED, result="fresh", lease=fresh.lease)
        events = await store.read_events(job.id)
        assert events[:5] == log_before
        assert shape(events) == [(1, "queued"), (2, "started"), (3, "output"),
                                 (4, "retrying"), (5, "started"), (6, "output"),
                                 (7, "succeeded")]
        assert events[3].data["reason"] == rules.LEASE_LAPSED
        assert [e.data["chunk"] for e in events if e.type is EventType.OUTPUT] == [
            "first try", "second try"]
        done = await store.get_job(job.id)
        assert done is not None and done.result == "fresh"
        # And a finished job refuses the stale lease too, without changing.
        assert (await store.finish(job.id, JobStatus.FAILED, lease=stale.lease)).result \
            == "fresh"

    async def test_a_lapsed_lease_without_attempts_left_fails_the_job(
            self, store: Store) -> None:
        last_try = await submit(store, max_attempts=1)
        doomed = await submit(store, "caption", max_attempts=3)
        await claim_one(store, lease=0.05)
        await claim_one(store, "caption", lease=0.05)
        await store.cancel(doomed.id)
        await anyio.sleep(0.1)
        await store.housekeep(time.time())

        failed = await store.wait_terminal(last_try.id, timeout=WAIT)
        assert failed.status is JobStatus.FAILED and failed.error is not None
        assert failed.error["type"] == "WorkerLost"
        cancelled = await store.wait_terminal(doomed.id, timeout=WAIT)
        assert cancelled.status is JobStatus.CANCELLED  # a requested cancel is honoured
        assert await store.running_counts() == {}

    async def test_extend_leases_keeps_jobs_and_reports_what_to_stop(
            self, store: Store) -> None:
        kept = await submit(store, max_attempts=2)
        asked = await submit(store)
        gone = await submit(store)
        runs = {j.id: j for j in [await claim_one(store, lease=0.3) for _ in range(3)]}
        await store.cancel(asked.id)
        await store.finish(gone.id, JobStatus.SUCCEEDED)  # e.g. reclaimed and finished
        for _ in range(4):  # renewed past three of its original leases
            report = await store.extend_leases(
                "w1", {j.id: j.lease_token for j in runs.values()}, 0.3)
            await anyio.sleep(0.1)
            await store.housekeep(time.time())
        assert report.cancelled == {asked.id} and report.lost == {gone.id}
        still = await store.get_job(kept.id)
        assert still is not None and still.status is JobStatus.RUNNING

        # A renewal with the wrong token or the wrong worker renews nothing.
        report = await store.extend_leases("w2", {kept.id: runs[kept.id].lease_token}, 30)
        assert report.lost == {kept.id}
        report = await store.extend_leases("w1", {kept.id: runs[kept.id].lease_token + 1}, 30)
        assert report.lost == {kept.id}
        await anyio.sleep(0.35)
        await store.housekeep(time.time())
        lapsed = await store.get_job(kept.id)
        assert lapsed is not None and lapsed.status is JobStatus.QUEUED

    async def test_a_cancel_beats_a_retry_and_a_requeue(self, store: Store) -> None:
        retried = await submit(store, max_attempts=3)
        requeued = await submit(store, "caption")
        retry_lease = (await claim_one(store)).lease
        requeue_lease = (await claim_one(store, "caption")).lease
        await store.cancel(retried.id)
        await store.cancel(requeued.id)
        # The worker's attempt failed (or it shut down) just as the user pressed stop.
        after_retry = await store.retry(retried.id, 0.0, {"type": "E", "message": "blip"},
                                        retry_lease)
        after_requeue = await store.requeue(requeued.id, "worker shut down", requeue_lease)
        assert after_retry.status is JobStatus.CANCELLED
        assert after_requeue.status is JobStatus.CANCELLED
        for job in (retried, requeued):
            assert shape(await store.read_events(job.id)) == [
                (1, "queued"), (2, "started"), (3, "cancelled")]
        assert await store.claim(["render", "caption"], "w1", LEASE) is None
        assert await store.queue_depth("render") == 0

    async def test_claim_limits_hold_across_workers(self, store: Store) -> None:
        for _ in range(5):
            await submit(store, "gpu")
        await submit(store, "cpu")
        limits = {"gpu": 2}
        first = await store.claim(["gpu"], "w1", LEASE, limits)
        second = await store.claim(["gpu"], "w2", LEASE, limits)
        assert first is not None and second is not None
        assert await store.claim(["gpu"], "w3", LEASE, limits) is None  # 2 run already
        other = await store.claim(["gpu", "cpu"], "w3", LEASE, limits)
        assert other is not None and other.function == "cpu"  # other functions still run
        assert await store.running_counts() == {"gpu": 2, "cpu": 1}
        await store.finish(first.id, JobStatus.SUCCEEDED, lease=first.lease)
        third = await store.claim(["gpu"], "w3", LEASE, limits)
        assert third is not None and third.function == "gpu"
        assert await store.running_counts() == {"gpu": 2, "cpu": 1}
        assert await store.claim(["gpu"], "w1", LEASE) is not None  # no limit given

    async def test_claim_many_takes_the_queue_head_within_each_want(
            self, store: Store) -> None:
        low = [await submit(store, "render") for _ in range(3)]
        high = await submit(store, "render", priority=5)
        captions = [await submit(store, "caption", priority=2) for _ in range(3)]
        got = await store.claim_many({"render": 2, "caption": 2, "upscale": 4}, "w1", LEASE)
        # The best four in claim order, but never more of a function than wanted.
        assert [j.id for j in got] == [high.id, captions[0].id, captions[1].id, low[0].id]
        assert all(j.status is JobStatus.RUNNING and j.worker_id == "w1" for j in got)
        assert len({j.lease_token for j in got}) >= 1 and all(j.attempts == 1 for j in got)
        assert await store.claim_many({"render": 0}, "w1", LEASE) == []
        # A cluster-wide limit counts what is already running.
        limited = await store.claim_many({"caption": 5}, "w2", LEASE, {"caption": 3})
        assert [j.id for j in limited] == [captions[2].id]
        assert await store.claim_many({"caption": 5}, "w2", LEASE, {"caption": 3}) == []
        rest = await store.claim_many({"render": 9}, "w2", LEASE)
        assert [j.id for j in rest] == [low[1].id, low[2].id]
        for job in got:
            events = await events_until(store, job.id, 2)
            assert shape(events) == [(1, "queued"), (2, "started")]

    async def test_started_event_says_attempt_and_worker(self, store: Store) -> None:
        job = await submit(store, max_attempts=4)
        claimed = await claim_one(store, worker="gpu-box:17")
        [_, started] = await events_until(store, job.id, 2)
        assert started.data == {"attempt": 1, "max_attempts": 4, "worker": "gpu-box:17"}
        assert claimed.lease == Lease("gpu-box:17", claimed.lease_token)

    # -- the cluster -----------------------------------------------------------------
    async def test_workers_report_themselves_and_time_out(self, store: Store) -> None:
        now = time.time()
        a = WorkerInfo("a", "host1", 11, ("render",), 2, 1, now - 5, now)
        b = WorkerInfo("b", "host2", 12, ("render", "caption"), 4, 0, now - 5, now)
        await store.register_worker(a, ttl=0.2)
        await store.register_worker(b, ttl=30)
        assert sorted(await store.workers(), key=lambda w: w.id) == [a, b]
        await anyio.sleep(0.3)
        assert await store.workers() == [b]  # a stopped reporting
        await store.unregister_worker("b")
        assert await store.workers() == []

    async def test_finished_stats_count_every_end_and_read_a_bounded_window(
            self, store: Store) -> None:
        cached = SubmitPolicy(cache_ttl=3600.0)
        ok = await submit(store, policy=cached, owner="alice", cache_key="ck")
        lease = (await claim_one(store)).lease
        await store.finish(ok.id, JobStatus.SUCCEEDED, result="cat", lease=lease)
        hit = await store.create_job(make_job(owner="alice", cache_key="ck"), cached)
        assert hit.reason == "cached"  # a cache hit is a succeeded job too
        failed = await submit(store, owner="bob")
        lease = (await claim_one(store)).lease
        await store.finish(failed.id, JobStatus.FAILED, lease=lease,
                           error={"type": "E", "message": "x"})
        cancelled = await submit(store, "caption", owner="bob")
        await store.cancel(cancelled.id)
        await store.cancel(cancelled.id)  # a second cancel ends nothing: not counted
        await submit(store, owner="bob")  # queued: not finished

        stats = await store.finished_stats(0.0, 100)
        assert stats.totals == {("alice", "render", "succeeded"): 2,
                                ("bob", "render", "failed"): 1,
                                ("bob", "caption", "cancelled"): 1}
        assert [f.finished_at for f in stats.recent] == sorted(
            (f.finished_at for f in stats.recent), reverse=True)  # newest first
        assert [(f.owner, f.function, f.status) for f in stats.recent][-1] == (
            "alice", "render", JobStatus.SUCCEEDED)
        assert len(stats.recent) == 4
        first = stats.recent[-1]
        assert first.started_at is not None and first.created_at <= first.started_at
        assert first.started_at <= first.finished_at

        newest = await store.finished_stats(0.0, 2)  # the window is bounded
        assert newest.recent == stats.recent[:2] and newest.totals == stats.totals
        later = await store.finished_stats(stats.recent[0].finished_at + 1, 100)
        assert later.recent == []
        # Totals outlive the jobs: retention deletes them, the counts stay.
        assert await store.purge_finished(time.time() + 1, 100) == 4
        after = await store.finished_stats(0.0, 100)
        assert after.recent == [] and after.totals == stats.totals

    # -- cancellation ----------------------------------------------------------------
    async def test_cancel_of_a_queued_job_is_immediate(self, store: Store) -> None:
        doomed = await submit(store)
        kept = await submit(store)
        cancelled = await store.cancel(doomed.id, "changed my mind")
        assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
        events = await store.read_events(doomed.id)
        assert shape(events) == [(1, "queued"), (2, "cancelled")]
        assert events[1].data["reason"] == "changed my mind"
        assert await store.queue_depth("render") == 1
        assert await store.queue_position(kept.id) == 1
        assert (await store.wait_terminal(doomed.id, timeout=1)).status is JobStatus.CANCELLED
        claimed = await claim_one(store)
        assert claimed.id == kept.id
        # Cancelling again changes nothing.
        again = await store.cancel(doomed.id)
        assert again.status is JobStatus.CANCELLED and len(await store.read_events(doomed.id)) == 2
        with pytest.raises(JobNotFound):
            await store.cancel(new_job_id())

    async def test_cancel_of_a_running_job_asks_its_worker(self, store: Store) -> None:
        asked: list[str] = []
        told = anyio.Event()

        def on_cancel(job_id: str) -> None:
            asked.append(job_id)
            told.set()

        unsubscribe = store.subscribe_cancels(on_cancel)
        try:
            job = await submit(store)
            await claim_one(store)
            answer = await store.cancel(job.id, "user pressed stop")
            assert answer.status is JobStatus.RUNNING and answer.cancel_requested
            with anyio.fail_after(WAIT):
                await told.wait()  # the worker is told to stop the job
            assert asked == [job.id]
            stored = await store.get_job(job.id)
            assert stored is not None and stored.cancel_requested
            assert stored.status is JobStatus.RUNNING  # until its worker stops it
            done = await store.finish(job.id, JobStatus.CANCELLED, data={"reason": "cancelled"})
            assert done.status is JobStatus.CANCELLED
            assert shape(await store.read_events(job.id))[-1] == (3, "cancelled")
        finally:
            unsubscribe()
        other = await submit(store)
        await claim_one(store)
        await store.cancel(other.id)
        await anyio.sleep(0.05)
        assert asked == [job.id]  # unsubscribed: not told any more

    # -- housekeeping ----------------------------------------------------------------
    async def test_housekeep_expires_jobs_past_their_queue_timeout(self, store: Store) -> None:
        now = time.time()
        soon = await submit(store, expires_at=now + 100)
        never = await submit(store)
        later = await submit(store, expires_at=now + 1000)
        started = await submit(store, "caption", expires_at=now + 100)
        await claim_one(store, "caption", lease=1000)  # its lease outlives the sweep

        await store.housekeep(now + 200)

        expired = await store.get_job(soon.id)
        assert expired is not None and expired.status is JobStatus.EXPIRED
        events = await store.read_events(soon.id)
        assert shape(events) == [(1, "queued"), (2, "expired")]
        assert (await store.wait_terminal(soon.id, timeout=1)).status is JobStatus.EXPIRED
        for live, status in ((never, JobStatus.QUEUED), (later, JobStatus.QUEUED),
                             (started, JobStatus.RUNNING)):
            stored = await store.get_job(live.id)
            assert stored is not None and stored.status is status
        assert await store.queue_depth("render") == 2
        assert await store.queue_position(never.id) == 1

    async def test_a_job_past_its_queue_timeout_never_starts(self, store: Store) -> None:
        stale = await submit(store, expires_at=time.time() - 1)
        fresh = await submit(store)
        claimed = await claim_one(store)
        assert claimed.id == fresh.id
        await store.housekeep(time.time())
        expired = await store.get_job(stale.id)
        assert expired is not None and expired.status is JobStatus.EXPIRED
        assert expired.attempts == 0

    async def test_a_retry_is_not_expired_by_the_queue_timeout(self, store: Store) -> None:
        """The queue timeout bounds the wait before a job first starts. A job that started
        in time and is then retried or re-queued has waited its turn: it must run again."""
        now = time.time()
        retried = await submit(store, max_attempts=2, expires_at=now + 100)
        requeued = await submit(store, "caption", expires_at=now + 100)
        lease = (await claim_one(store)).lease
        other = (await claim_one(store, "caption")).lease
        await store.retry(retried.id, 0.0, {"type": "E", "message": "transient"}, lease)
        await store.requeue(requeued.id, "worker shut down", other)
        await store.housekeep(now + 200)
        for job in (retried, requeued):
            stored = await store.get_job(job.id)
            assert stored is not None and stored.status is JobStatus.QUEUED
        assert (await claim_one(store)).id == retried.id
        assert (await claim_one(store, "caption")).id == requeued.id

        # The same when the queue timeout has really passed by the time of the retry.
        soon = await submit(store, "upscale", max_attempts=2, expires_at=time.time() + 0.3)
        lease = (await claim_one(store, "upscale")).lease
        await store.retry(soon.id, 0.0, {"type": "E", "message": "transient"}, lease)
        await anyio.sleep(0.35)
        await store.housekeep(time.time())
        again = await claim_one(store, "upscale")
        assert again.id == soon.id and again.attempts == 2

    # -- artifacts -------------------------------------------------------------------
    async def test_artifacts_round_trip(self, store: Store) -> None:
        job = await submit(store)
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
        ref = await store.put_artifact(job.id, "cat.png", "image/png", png)
        assert (ref.job_id, ref.name, ref.content_type, ref.size) == (
            job.id, "cat.png", "image/png", len(png))
        wav = await store.put_artifact(job.id, "meow.wav", "audio/wav", b"RIFF")
        assert wav.id != ref.id
        found = await store.get_artifact(ref.id)
        assert found is not None
        got_ref, data = found
        assert got_ref == ref and data == png
        found = await store.get_artifact(wav.id)
        assert found is not None and found[1] == b"RIFF" and found[0].content_type == "audio/wav"
        assert await store.get_artifact("no-such-artifact") is None

    # -- listing ---------------------------------------------------------------------
    async def test_list_jobs_filters_orders_and_pages(self, store: Store) -> None:
        base = time.time() - 1000
        spec = [("alice", "render"), ("bob", "render"), ("alice", "caption"),
                ("bob", "caption"), ("alice", "render"), ("bob", "render"),
                ("alice", "render")]
        jobs = [await submit(store, fn, owner=owner, created_at=base + i)
                for i, (owner, fn) in enumerate(spec)]
        running = await claim_one(store, "caption")  # jobs[2]
        assert running.id == jobs[2].id
        done = await claim_one(store, "render")  # jobs[0]
        await store.finish(done.id, JobStatus.SUCCEEDED, result="r")
        newest_first = [j.id for j in reversed(jobs)]

        def ids(found: list[Job]) -> list[str]:
            return [j.id for j in found]

        assert ids(await store.list_jobs()) == newest_first
        assert ids(await store.list_jobs(owner="alice")) == [
            jobs[i].id for i in (6, 4, 2, 0)]
        assert ids(await store.list_jobs(function="caption")) == [jobs[3].id, jobs[2].id]
        assert ids(await store.list_jobs(owner="bob", function="render")) == [
            jobs[5].id, jobs[1].id]
        assert ids(await store.list_jobs(status=JobStatus.SUCCEEDED)) == [jobs[0].id]
        assert ids(await store.list_jobs(status=JobStatus.RUNNING)) == [jobs[2].id]
        assert ids(await store.list_jobs(status=JobStatus.QUEUED)) == [
            jobs[i].id for i in (6, 5, 4, 3, 1)]
        assert ids(await store.list_jobs(owner="alice", status=JobStatus.QUEUED)) == [
            jobs[6].id, jobs[4].id]
        assert await store.list_jobs(owner="carol") == []
        assert await store.list_jobs(status=JobStatus.FAILED) == []

        listed = {j.id: j for j in await store.list_jobs()}
        assert listed[jobs[0].id].status is JobStatus.SUCCEEDED
        assert listed[jobs[0].id].result == "r"
        assert listed[jobs[2].id].status is JobStatus.RUNNING
        assert listed[jobs[3].id].status is JobStatus.QUEUED

        assert ids(await store.list_jobs(limit=2)) == newest_first[:2]
        assert ids(await store.list_jobs(before=base + 4)) == newest_first[3:]
        assert ids(await store.list_jobs(owner="alice", before=base + 4, limit=1)) == [
            jobs[2].id]
        pages: list[str] = []
        before: float | None = None
        while page := await store.list_jobs(limit=3, before=before):
            assert len(page) <= 3
            pages.extend(ids(page))
            before = page[-1].created_at
        assert pages == newest_first

    async def test_list_jobs_pages_jobs_of_one_instant_each_once(self, store: Store) -> None:
        """Jobs sharing a created_at across page boundaries: paged on (created_at, id)
        with small limits, every job comes exactly once, newest first (ties: higher id
        first), through every listing path (all, an owner's, a status, live ones)."""
        instant = time.time() - 500
        stamps = [instant] * 17 + [instant - 1] * 3 + [instant + 1] * 2
        jobs = [await submit(store, owner="alice", created_at=t) for t in stamps]
        jobs.append(await submit(store, owner="bob", created_at=instant))
        for job in jobs[::3]:
            await store.cancel(job.id)
        cancelled = {j.id for j in jobs[::3]}

        def newest_first(which: list[Job]) -> list[str]:
            return [j.id for j in sorted(which, key=lambda j: (j.created_at, j.id),
                                         reverse=True)]

        alice = [j for j in jobs if j.owner == "alice"]
        cases: list[tuple[dict[str, Any], list[str]]] = [
            ({}, newest_first(jobs)),
            ({"owner": "alice"}, newest_first(alice)),
            ({"owner": "alice", "status": JobStatus.CANCELLED},
             newest_first([j for j in alice if j.id in cancelled])),
            ({"status": JobStatus.QUEUED}, newest_first([j for j in jobs
                                                          if j.id not in cancelled])),
        ]
        for filters, expected in cases:
            for limit in (1, 4, 7):
                seen: list[str] = []
                before: float | None = None
                before_id: str | None = None
                for _ in range(len(jobs) + 2):
                    page = await store.list_jobs(limit=limit, before=before,
                                                 before_id=before_id, **filters)
                    assert len(page) <= limit
                    if not page:
                        break
                    seen.extend(j.id for j in page)
                    before, before_id = page[-1].created_at, page[-1].id
                assert seen == expected, (filters, limit)
        # A plain time still means "created strictly before it".
        assert [j.id for j in await store.list_jobs(before=instant)] == newest_first(
            jobs[17:20])

    async def test_subscribe_jobs_reports_each_status_change(self, store: Store) -> None:
        send, receive = anyio.create_memory_object_stream[tuple[str, JobStatus, int]](100)
        with send, receive:
            unsubscribe = store.subscribe_jobs(
                lambda job: send.send_nowait((job.id, job.status, job.attempts)))
            job = await submit(store, max_attempts=2)
            lease = (await claim_one(store)).lease
            await store.append_events(job.id, [(EventType.OUTPUT, {"chunk": i})
                                               for i in range(20)], lease)
            await store.append_events(job.id, [(EventType.PROGRESS, {"fraction": 0.5})], lease)
            await store.retry(job.id, 0.0, {"type": "E", "message": ""}, lease)
            lease = (await claim_one(store)).lease
            await store.finish(job.id, JobStatus.SUCCEEDED, result="ok", lease=lease)
            doomed = await submit(store)
            await store.cancel(doomed.id)
            expected = [(job.id, JobStatus.QUEUED, 0), (job.id, JobStatus.RUNNING, 1),
                        (job.id, JobStatus.QUEUED, 1), (job.id, JobStatus.RUNNING, 2),
                        (job.id, JobStatus.SUCCEEDED, 2), (doomed.id, JobStatus.QUEUED, 0),
                        (doomed.id, JobStatus.CANCELLED, 0)]
            with anyio.fail_after(WAIT):
                got = [await receive.receive() for _ in expected]
            assert got == expected  # in order, and nothing for output or progress
            unsubscribe()
            await submit(store)
            await anyio.sleep(0.05)
            assert receive.statistics().current_buffer_used == 0

    # -- retention -------------------------------------------------------------------
    async def test_purge_deletes_old_finished_jobs_with_all_their_traces(
            self, store: Store) -> None:
        cached = SubmitPolicy(cache_ttl=3600.0, dedupe=True)
        # Live jobs older than the cutoff: never deleted, whatever their age.
        queued = await submit(store, "upscale", owner="alice")
        running = await submit(store, "train", owner="alice")
        lease = (await claim_one(store, "train")).lease

        old_ok = await submit(store, policy=cached, owner="alice", cache_key="ck",
                              idempotency_key="req-old")
        ok_lease = (await claim_one(store)).lease
        await store.append_events(old_ok.id, [(EventType.OUTPUT, {"chunk": "a"})], ok_lease)
        art = await store.put_artifact(old_ok.id, "cat.png", "image/png", b"\x89PNG")
        await store.finish(old_ok.id, JobStatus.SUCCEEDED, result="cat", lease=ok_lease)
        old_failed = await submit(store, owner="alice")
        failed_lease = (await claim_one(store)).lease
        await store.finish(old_failed.id, JobStatus.FAILED, lease=failed_lease,
                           error={"type": "OOM", "message": "x"})
        old_cancelled = await submit(store, owner="bob")
        await store.cancel(old_cancelled.id)
        await anyio.sleep(0.02)
        cutoff = time.time()
        await anyio.sleep(0.02)
        recent = await submit(store, "caption", owner="alice")
        await claim_one(store, "caption")
        await store.finish(recent.id, JobStatus.SUCCEEDED, result="fresh")

        assert await store.purge_finished(cutoff, 100) == 3
        for gone in (old_ok, old_failed, old_cancelled):
            assert await store.get_job(gone.id) is None
            assert await store.read_events(gone.id) == []
            with pytest.raises(JobNotFound):
                await store.wait_terminal(gone.id, timeout=1.0)
        assert await store.get_artifact(art.id) is None
        listed = [j.id for j in await store.list_jobs(owner="alice")]
        assert listed == [recent.id, running.id, queued.id]
        assert [j.id for j in await store.list_jobs()] == [recent.id, running.id, queued.id]
        assert [j.id for j in await store.list_jobs(owner="alice",
                                                    status=JobStatus.SUCCEEDED)] == [recent.id]
        assert await store.list_jobs(owner="bob") == []
        assert await store.list_jobs(status=JobStatus.FAILED) == []

        # What stays is untouched: the running job still holds its lease.
        still = await store.get_job(queued.id)
        assert still is not None and still.status is JobStatus.QUEUED
        assert await store.append_events(running.id, [(EventType.LOG, {"line": "hi"})],
                                         lease) == 3
        kept = await store.get_job(recent.id)
        assert kept is not None and kept.result == "fresh"
        assert [e.type for e in await store.read_events(recent.id)][-1] is EventType.SUCCEEDED
        assert await store.purge_finished(cutoff, 100) == 0

        # Neither the idempotency key nor the cache entry resolves to the deleted job:
        # the key is free again, and the same input is computed again.
        again = await store.create_job(make_job(owner="alice", idempotency_key="req-old",
                                                input={"prompt": "other"}), OPEN)
        assert (again.created, again.reason) == (True, "new") and again.job.id != old_ok.id
        fresh = await store.create_job(make_job(owner="alice", cache_key="ck"), cached)
        assert (fresh.created, fresh.reason) == (True, "new")
        assert fresh.job.status is JobStatus.QUEUED

    async def test_a_cache_hit_keeps_a_result_in_use_past_its_first_job(
            self, store: Store) -> None:
        policy = SubmitPolicy(cache_ttl=3600.0)
        first = await submit(store, policy=policy, cache_key="k")
        await claim_one(store)
        await store.finish(first.id, JobStatus.SUCCEEDED, result="r")
        hit = await store.create_job(make_job(cache_key="k"), policy)
        assert hit.reason == "cached"
        await anyio.sleep(0.02)
        # Only the first job is past the cutoff: the hit, a job of its own, answers next.
        assert await store.purge_finished(hit.job.finished_at or 0.0, 10) == 1
        assert await store.get_job(first.id) is None
        again = await store.create_job(make_job(cache_key="k"), policy)
        assert again.reason == "cached" and again.job.result == "r"
        [event] = await store.read_events(again.job.id)
        assert event.data["cached_from"] == hit.job.id

    async def test_housekeep_deletes_expired_jobs_in_batches_until_done(
            self, store_factory: StoreFactory) -> None:
        store = await store_factory(retain=3600.0)
        store.retain_batch = 2
        done = [await submit(store) for _ in range(5)]
        for job in done:
            await store.cancel(job.id)
        waiting = await submit(store, "upscale")
        later = time.time() + 7200  # every job above ended more than 3600 s before this
        left = []
        for _ in range(4):
            await store.housekeep(later)
            left.append(len(await store.list_jobs(status=JobStatus.CANCELLED)))
        assert left == [3, 1, 0, 0]
        assert all([await store.get_job(j.id) is None for j in done])
        assert [j.id for j in await store.list_jobs()] == [waiting.id]

        # A window not yet over, or none at all, deletes nothing.
        kept = await submit(store)
        await store.cancel(kept.id)
        await store.housekeep(time.time())
        assert (await store.get_job(kept.id)) is not None
        forever = await store_factory(retain=None)
        kept = await submit(forever)
        await forever.cancel(kept.id)
        await forever.housekeep(later)
        assert (await forever.get_job(kept.id)) is not None

    async def test_purges_at_once_delete_each_job_once(self, store: Store) -> None:
        done = [await submit(store) for _ in range(7)]
        for job in done:
            await store.cancel(job.id)
        counts: list[int] = []

        async def purge() -> None:
            while n := await store.purge_finished(time.time(), 2):
                counts.append(n)

        async with anyio.create_task_group() as tg:
            tg.start_soon(purge)
            tg.start_soon(purge)
        assert sum(counts) == 7 and max(counts) <= 2
        assert await store.list_jobs() == []

    # -- notifications ---------------------------------------------------------------
    async def test_subscriptions_made_together_all_hold(self, store: Store) -> None:
        heard: list[str] = []
        store.subscribe_work(lambda: heard.append("work"))
        store.subscribe_cancels(lambda job_id: heard.append(f"cancel {job_id}"))
        store.subscribe_jobs(lambda job: heard.append(f"{job.status.value} {job.id}"))
        job = await submit(store)
        await claim_one(store)
        await store.cancel(job.id)
        with anyio.fail_after(WAIT):  # three callbacks and one condition: polled
            while not {f"queued {job.id}", f"running {job.id}", f"cancel {job.id}",  # noqa: ASYNC110
                       "work"} <= set(heard):
                await anyio.sleep(0.01)

    async def test_subscribe_work_fires_on_submit(self, store: Store) -> None:
        calls: list[str] = []
        told = anyio.Event()

        def on_work() -> None:
            calls.append("work")
            told.set()

        unsubscribe = store.subscribe_work(on_work)
        await submit(store)
        with anyio.fail_after(WAIT):
            await told.wait()  # a submission announces work
        unsubscribe()
        seen = len(calls)
        await submit(store)
        await anyio.sleep(0.05)
        assert len(calls) == seen  # unsubscribed
