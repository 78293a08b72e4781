"""Warm routing, part of the Store contract (``StoreContract`` inherits these tests):
a claim with ``Warmth`` sends a job to the worker that holds its model, on every store.

The workers here are names and reports (``register_worker``), as a real worker's would
be; what is asserted is what a user notices: which job each worker gets, and that a job
is never stranded (a model nobody holds, a holder that died, a job that waited its
bound), nor priority, ``max_running`` or plain FIFO claims changed.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from genq.models import Job, JobStatus, WorkerInfo, new_job_id
from genq.store.base import Store, SubmitPolicy, Warmth

LEASE = 30.0
WAITS = {"render": 30.0}  # a bound no test reaches unless it means to


def holder(worker_id: str, *holds: str) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(worker_id, "host", 1, ("render",), 1, 0, now, now,
                      holds=frozenset(holds))


def warm(*holds: str, waits: dict[str, float] | None = None) -> Warmth:
    return Warmth(frozenset(holds), WAITS if waits is None else waits)


async def queue(store: Store, affinity: str | None, **fields: Any) -> Job:
    job = Job(id=new_job_id(), function=fields.pop("function", "render"),
              input={"checkpoint": affinity}, affinity=affinity, **fields)
    submitted = await store.create_job(job, SubmitPolicy())
    assert submitted.created
    return submitted.job


async def take(store: Store, worker: str, warmth: Warmth | None,
               functions: tuple[str, ...] = ("render",), **kwargs: Any) -> str | None:
    job = await store.claim(functions, worker, LEASE, warmth=warmth, **kwargs)
    return None if job is None else job.input["checkpoint"]


@pytest.mark.anyio
class RoutingContract:
    async def test_affinity_is_kept_by_reads_and_claims(self, store: Store) -> None:
        job = await queue(store, "ckpt:sd15")
        plain = await queue(store, None)
        stored = await store.get_job(job.id)
        assert stored is not None and stored.affinity == "ckpt:sd15"
        claimed = await store.claim(["render"], "w1", LEASE)
        assert claimed is not None and (claimed.id, claimed.affinity) == (job.id, "ckpt:sd15")
        other = await store.claim(["render"], "w1", LEASE)
        assert other is not None and other.id == plain.id and other.affinity is None
        listed = await store.list_jobs(function="render", status=JobStatus.RUNNING)
        assert {j.affinity for j in listed} == {"ckpt:sd15", None}

    async def test_a_warm_worker_takes_its_job_behind_an_older_one(
            self, store: Store) -> None:
        await queue(store, "ckpt:b")
        await queue(store, "ckpt:a")
        await store.register_worker(holder("w2", "ckpt:b"), ttl=30)
        assert await take(store, "w1", warm("ckpt:a")) == "ckpt:a"
        assert await take(store, "w2", warm("ckpt:b")) == "ckpt:b"

    async def test_a_cold_worker_leaves_a_young_job_to_its_holder_until_the_bound(
            self, store: Store) -> None:
        await store.register_worker(holder("w2", "ckpt:a"), ttl=30)
        await queue(store, "ckpt:a")
        waits = {"render": 0.3}
        assert await take(store, "w1", warm("ckpt:x", waits=waits)) is None
        await anyio.sleep(0.4)
        assert await take(store, "w1", warm(waits=waits)) == "ckpt:a"

    async def test_a_job_whose_model_nobody_holds_goes_to_a_cold_worker(
            self, store: Store) -> None:
        await store.register_worker(holder("w2", "ckpt:a"), ttl=30)
        await queue(store, "ckpt:a")
        await queue(store, "ckpt:c")
        assert await take(store, "w1", warm("ckpt:x")) == "ckpt:c"
        assert await take(store, "w1", warm("ckpt:x")) is None  # ckpt:a waits for w2
        assert await take(store, "w2", warm("ckpt:a")) == "ckpt:a"

    async def test_dead_departed_and_changed_holders_do_not_count(
            self, store: Store) -> None:
        await store.register_worker(holder("dead", "ckpt:a"), ttl=0.2)
        await store.register_worker(holder("gone", "ckpt:b"), ttl=30)
        await store.register_worker(holder("moved", "ckpt:c"), ttl=30)
        await store.register_worker(holder("moved", "ckpt:d"), ttl=30)  # evicted c
        await store.register_worker(holder("alive", "ckpt:e"), ttl=30)
        await store.unregister_worker("gone")
        for model in ("e", "d", "a", "b", "c"):
            await queue(store, f"ckpt:{model}")
        await anyio.sleep(0.3)  # "dead" stopped reporting
        taken = [await take(store, "w1", warm()) for _ in range(4)]
        assert taken == ["ckpt:a", "ckpt:b", "ckpt:c", None]  # d, e: held by live workers
        assert await take(store, "moved", warm("ckpt:d")) == "ckpt:d"

    async def test_the_claiming_worker_is_not_its_own_other_holder(
            self, store: Store) -> None:
        # Its last report still names a model it has since let go of.
        await store.register_worker(holder("w1", "ckpt:a"), ttl=30)
        await queue(store, "ckpt:a")
        assert await take(store, "w1", warm()) == "ckpt:a"

    async def test_routing_never_breaks_priority(self, store: Store) -> None:
        await store.register_worker(holder("w2", "ckpt:a"), ttl=30)
        await queue(store, "ckpt:b")  # priority 0, warm for w1
        await queue(store, "ckpt:a", priority=5)  # waits for w2
        assert await take(store, "w1", warm("ckpt:b")) is None
        assert await take(store, "w2", warm("ckpt:a")) == "ckpt:a"
        assert await take(store, "w1", warm("ckpt:b")) == "ckpt:b"
        # Across functions too: the best of each function's own choice.
        await queue(store, "ckpt:a", function="upscale", priority=1)
        await queue(store, "ckpt:b", priority=0)
        both = {"render": 30.0, "upscale": 30.0}
        assert await take(store, "w1", warm("ckpt:b", waits=both),
                          ("render", "upscale")) == "ckpt:b"

    async def test_max_running_still_holds(self, store: Store) -> None:
        await queue(store, "ckpt:a")
        await queue(store, "ckpt:a")
        limits = {"render": 1}
        assert await take(store, "w1", warm("ckpt:a"), limits=limits) == "ckpt:a"
        assert await take(store, "w2", warm("ckpt:a"), limits=limits) is None
        many = await store.claim_many({"render": 3}, "w2", LEASE, limits, warm("ckpt:a"))
        assert many == []

    async def test_claim_many_routes_each_job(self, store: Store) -> None:
        await store.register_worker(holder("w2", "ckpt:b"), ttl=30)
        for model in ("b", "a", "b", "c", "a"):
            await queue(store, f"ckpt:{model}")
        got = await store.claim_many({"render": 4}, "w1", LEASE, None, warm("ckpt:a"))
        assert [j.input["checkpoint"] for j in got] == ["ckpt:a", "ckpt:a", "ckpt:c"]
        rest = await store.claim_many({"render": 4}, "w2", LEASE, None, warm("ckpt:b"))
        assert [j.input["checkpoint"] for j in rest] == ["ckpt:b", "ckpt:b"]

    async def test_an_overdue_job_is_taken_before_warm_ones(self, store: Store) -> None:
        # The bound bounds how long a job is passed over: once past it, the next free
        # worker takes it, ahead of the warm jobs queued behind it.
        await store.register_worker(holder("w2", "ckpt:b"), ttl=30)
        await queue(store, "ckpt:b", created_at=time.time() - 60)
        await queue(store, "ckpt:a")
        assert await take(store, "w1", warm("ckpt:a")) == "ckpt:b"

    async def test_without_warmth_claims_are_plain_fifo(self, store: Store) -> None:
        await store.register_worker(holder("w2", "ckpt:b"), ttl=30)
        for model in ("b", "a", "b", "a"):
            await queue(store, f"ckpt:{model}")
        assert await take(store, "w1", None) == "ckpt:b"
        # A function without a bound, or a bound of 0, is not routed either.
        assert await take(store, "w1", warm("ckpt:a", waits={})) == "ckpt:a"
        assert await take(store, "w1", warm("ckpt:a", waits={"render": 0.0})) == "ckpt:b"
        assert await take(store, "w1", warm("ckpt:x")) == "ckpt:a"
