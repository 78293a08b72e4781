"""Sharing a store between owners, part of the Store contract (``StoreContract`` inherits
these tests): fair share among owners within a priority, and per-owner quotas
(``max_queued`` at submission, ``max_running`` at every claim), on every store.

What is asserted is what a user notices: which job runs next, the positions owners are
told (and that they are the order claims take), the refusal naming the quota, and how
many of an owner's jobs run at once, whichever worker claims.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from genq.errors import OwnerQuota
from genq.models import Job, JobStatus, new_job_id
from genq.store.base import Store, SubmitPolicy, Warmth

LEASE = 30.0
ERROR = {"type": "Boom", "message": "try again"}


async def queue(store: Store, owner: str, policy: SubmitPolicy | None = None,
                **fields: Any) -> Job:
    job = Job(id=new_job_id(), function=fields.pop("function", "render"),
              input={"n": new_job_id()}, owner=owner, **fields)
    submitted = await store.create_job(job, policy or SubmitPolicy())
    assert submitted.created
    return submitted.job


async def drain(store: Store, function: str = "render") -> list[Job]:
    """Every ready job of ``function``, in the order claims take them."""
    taken = []
    while (job := await store.claim([function], "w1", LEASE)) is not None:
        taken.append(job)
    return taken


async def told(store: Store, job: Job) -> int:
    """The position ``job``'s queued event told its owner."""
    return int((await store.read_events(job.id))[0].data["position"])


class SharingContract:
    """Fair share and per-owner quotas: tests every Store must pass."""

    # -- fair share ----------------------------------------------------------------
    async def test_a_second_owner_does_not_wait_behind_a_first_owners_backlog(
            self, store: Store) -> None:
        alice = [await queue(store, "alice") for _ in range(20)]
        bob = await queue(store, "bob")
        # bob is told he is second, is second, and the second claim takes his job
        assert await told(store, bob) == 2
        assert await store.queue_position(bob.id) == 2
        order = await drain(store)
        assert [j.id for j in order[:2]] == [alice[0].id, bob.id]
        # alice's own jobs still run in the order she queued them
        assert [j.id for j in order if j.owner == "alice"] == [j.id for j in alice]

    async def test_owners_take_turns_and_positions_are_the_claim_order(
            self, store: Store) -> None:
        jobs = ([await queue(store, "alice") for _ in range(4)]
                + [await queue(store, "bob") for _ in range(3)]
                + [await queue(store, "carol")])
        positions = {j.id: await store.queue_position(j.id) for j in jobs}
        order = await drain(store)
        # turns: each owner's first job, then each one's second...
        assert [j.owner for j in order] == ["alice", "bob", "carol", "alice", "bob",
                                             "alice", "bob", "alice"]
        # every position said before was the job's place in the claim order
        assert [positions[j.id] for j in order] == list(range(1, 9))

    async def test_a_newcomer_goes_next_after_claims(self, store: Store) -> None:
        for _ in range(6):
            await queue(store, "alice")
        for _ in range(3):
            assert (await store.claim(["render"], "w1", LEASE)) is not None
        bob = await queue(store, "bob")
        assert await told(store, bob) == 1  # not behind alice's three left
        later = await queue(store, "alice")
        assert await told(store, later) == 5

    async def test_priority_beats_fair_share(self, store: Store) -> None:
        bob = await queue(store, "bob")
        urgent = [await queue(store, "alice", priority=5) for _ in range(3)]
        assert await store.queue_position(bob.id) == 4
        order = await drain(store)
        assert [j.id for j in order] == [*(j.id for j in urgent), bob.id]

    async def test_fair_share_turns_off(self, store_factory: Callable[..., Awaitable[Store]]
                                        ) -> None:
        store = await store_factory(fair_share=False)
        for _ in range(5):
            await queue(store, "alice")
        bob = await queue(store, "bob")
        assert await told(store, bob) == 6
        assert [j.owner for j in await drain(store)][-1] == "bob"

    async def test_a_retried_job_takes_its_owners_next_turn(self, store: Store) -> None:
        first = await queue(store, "alice", max_attempts=2)
        others = [await queue(store, "alice") for _ in range(2)]
        bob = [await queue(store, "bob") for _ in range(2)]
        running = await store.claim(["render"], "w1", LEASE)
        assert running is not None and running.id == first.id
        await store.retry(first.id, 0.0, ERROR, running.lease)
        # alice's retry queues behind her own jobs, and bob still gets his turns
        order = await drain(store)
        assert [j.id for j in order] == [bob[0].id, others[0].id, bob[1].id, others[1].id,
                                         first.id]

    # -- quotas --------------------------------------------------------------------
    async def test_max_queued_refuses_the_owner_over_it_and_no_one_else(
            self, store: Store) -> None:
        quota = SubmitPolicy(owner_max_queued=2, retry_after=7)
        held = [await queue(store, "alice", quota, idempotency_key="k1"),
                await queue(store, "alice", quota, function="caption")]
        with pytest.raises(OwnerQuota) as refused:
            await queue(store, "alice", quota)
        error = refused.value
        assert error.status == 429 and error.code == "owner_quota" and error.retry_after == 7
        assert error.detail["owner"] == "alice" and error.detail["quota"] == "max_queued"
        assert (error.detail["limit"], error.detail["queued"]) == (2, 2)
        assert "alice has 2 queued jobs" in str(error) and "max_queued" in str(error)
        await queue(store, "bob", quota)  # another owner is not counted against alice
        # a submission answered by its idempotency key creates no job: never refused
        again = Job(id=new_job_id(), function="render", input=held[0].input, owner="alice",
                    idempotency_key="k1")
        first = await store.create_job(again, quota)
        assert not first.created and first.job.id == held[0].id
        # a claimed job and a cancelled one no longer count as queued
        claimed = await store.claim(["render"], "w1", LEASE)
        assert claimed is not None and claimed.id == held[0].id
        await queue(store, "alice", quota)
        await store.cancel(held[1].id)
        await queue(store, "alice", quota, function="caption")
        with pytest.raises(OwnerQuota):
            await queue(store, "alice", quota)
        # a job back in the queue counts again (a retry), and no quota means none
        await store.retry(claimed.id, 0.0, ERROR, claimed.lease)
        await queue(store, "alice")

    async def test_max_running_holds_across_workers(self, store: Store) -> None:
        alice = [await queue(store, "alice", owner_max_running=1) for _ in range(3)]
        bob = [await queue(store, "bob") for _ in range(3)]
        first = await store.claim(["render"], "w1", LEASE)
        assert first is not None and first.id == alice[0].id
        # alice runs her one; other workers take bob's jobs, passing hers over
        got = [await store.claim(["render"], w, LEASE) for w in ("w2", "w3", "w4")]
        assert [j.id if j else None for j in got] == [bob[0].id, bob[1].id, bob[2].id]
        assert await store.claim(["render"], "w5", LEASE) is None
        assert await store.queue_position(alice[1].id) == 1
        await store.finish(first.id, JobStatus.SUCCEEDED, result=1, lease=first.lease)
        second = await store.claim(["render"], "w5", LEASE)
        assert second is not None and second.id == alice[1].id
        # every way a run ends or goes back frees her slot: a requeue...
        await store.requeue(second.id, "shutdown", second.lease)
        again = await store.claim_many({"render": 5}, "w6", LEASE)
        assert [j.owner for j in again] == ["alice"]  # one, though five were wanted
        # ...a retry, a cancel, a lapsed lease
        await store.retry(again[0].id, 0.0, ERROR, again[0].lease)
        retried = await store.claim(["render"], "w1", LEASE)
        assert retried is not None and retried.owner == "alice"
        await store.cancel(retried.id)
        await store.finish(retried.id, JobStatus.CANCELLED, lease=retried.lease)
        await queue(store, "alice", owner_max_running=1)
        short = await store.claim(["render"], "w1", 0.05)
        assert short is not None and short.owner == "alice"
        assert await store.claim(["render"], "w2", LEASE) is None
        await anyio.sleep(0.1)
        await store.housekeep(time.time())
        assert await store.claim(["render"], "w2", LEASE) is not None

    async def test_max_running_keeps_warm_routing_and_priority(self, store: Store) -> None:
        runs = await queue(store, "alice", owner_max_running=1, priority=3)
        held_back = await queue(store, "alice", owner_max_running=1, priority=3)
        bob = await queue(store, "bob", affinity="sd:a")
        warmth = Warmth(frozenset({"sd:a"}), {"render": 30.0})
        first = await store.claim(["render"], "w1", LEASE, warmth=warmth)
        assert first is not None and first.id == runs.id
        # alice's higher-priority job waits for her slot; bob's lower one runs meanwhile
        second = await store.claim(["render"], "w1", LEASE, warmth=warmth)
        assert second is not None and second.id == bob.id
        assert await store.queue_position(held_back.id) == 1
