"""The Redis store: the shared Store contract against a real redis-server of the test's
own (never the machine's shared one on 6379), plus what is Redis's own."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from genq.errors import StoreUnavailable
from genq.joblog import JobLog
from genq.models import EventType, JobStatus
from genq.store import store_from_url
from genq.store.redis import ArtifactTooLarge, RedisStore
from genq.store.redis_circuit import Circuit
from tests.store.store_contract import LEASE, StoreContract, StoreFactory, submit
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), appendfsync="everysec") as server:
        yield server


class TestRedisStoreContract(StoreContract):
    @pytest.fixture
    async def store_factory(self, anyio_backend: Any,
                            redis_server: RedisServer) -> AsyncIterator[StoreFactory]:
        stores: list[RedisStore] = []

        async def make(**options: Any) -> RedisStore:
            # A prefix of its own: every store starts empty, on one server.
            store = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}", **options)
            await store.open()
            stores.append(store)
            return store

        yield make
        for store in reversed(stores):
            await store.close()


def test_store_urls_choose_the_backend(tmp_path: Path) -> None:
    redis = store_from_url("redis://127.0.0.1:6390/2?prefix=myapp&retry_for=3"
                           "&max_artifact_mb=0.5&socket_timeout=5")
    assert isinstance(redis, RedisStore) and redis.prefix == "myapp"
    assert redis.retry_for == 3 and redis.max_artifact_bytes == 1 << 19
    assert redis.url == "redis://127.0.0.1:6390/2?socket_timeout=5"  # the rest: redis-py's
    assert store_from_url("sqlite:///rel/genq.sqlite3").kind == "sqlite"
    # fair share is on unless a URL turns it off (docs/sharing.md)
    assert cast(RedisStore, store_from_url("redis://h/0")).fair_share
    assert not cast(RedisStore, store_from_url("redis://h/0?fair_share=0")).fair_share
    assert store_from_url("redis://h/0?fair_share=off").url == "redis://h/0"
    with pytest.raises(ValueError, match="not a yes/no value"):
        store_from_url("sqlite:///rel/genq.sqlite3?fair_share=maybe")
    with pytest.raises(ValueError, match="unknown store URL"):
        store_from_url("postgres://localhost/genq")
    with pytest.raises(ValueError, match="retry_for"):
        store_from_url("redis://localhost/0?retry_for=soon")


def test_store_urls_set_the_retention_window() -> None:
    assert store_from_url("redis://localhost/0").retain == 7 * 86400  # the default
    kept = store_from_url("redis://localhost/0?retain=12h&socket_timeout=5")
    assert isinstance(kept, RedisStore) and kept.retain == 12 * 3600
    assert kept.url == "redis://localhost/0?socket_timeout=5"
    assert store_from_url("redis://localhost/0?retain=forever").retain is None
    assert store_from_url("sqlite:///rel/genq.sqlite3?retain=30m").retain == 1800
    assert store_from_url("sqlite:///rel/genq.sqlite3?retain=0").retain is None
    assert store_from_url("rel/genq.sqlite3").retain == 7 * 86400
    with pytest.raises(ValueError, match="retention 'soon' is not a duration"):
        store_from_url("redis://localhost/0?retain=soon")
    with pytest.raises(ValueError, match="only the parameters retain and fair_share"):
        store_from_url("sqlite:///rel/genq.sqlite3?prefix=x")


@pytest.mark.anyio
async def test_housekeepers_of_many_processes_delete_each_job_once(
        anyio_backend: Any, redis_server: RedisServer) -> None:
    """Two front ends' housekeepers sweep one deployment at once: every old job and its
    artifacts go, none is counted twice, and the live job stays."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    stores = [RedisStore(redis_server.url, prefix=prefix) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        first = stores[0]
        done, artifacts = [], []
        for i in range(40):
            job = await submit(first, owner=f"user{i % 3}")
            claimed = await first.claim(["render"], "w1", LEASE)
            assert claimed is not None and claimed.id == job.id
            artifacts.append(await first.put_artifact(job.id, "a.bin", "x/y", b"%d" % i))
            await first.finish(job.id, JobStatus.SUCCEEDED, result=i, lease=claimed.lease)
            done.append(job)
        live = await submit(first)
        counts: list[int] = []

        async def sweep(store: RedisStore) -> None:
            while n := await store.purge_finished(time.time(), 3):
                counts.append(n)

        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(sweep, store)
        assert sum(counts) == 40
        for job, ref in zip(done, artifacts, strict=True):
            assert await stores[1].get_job(job.id) is None
            assert await stores[1].get_artifact(ref.id) is None
        assert [j.id for j in await stores[1].list_jobs()] == [live.id]
        leftovers = [k async for k in first._r().scan_iter(f"{prefix}:*")]
        assert [k.decode() for k in leftovers if any(
            f":{part}:" in k.decode() for part in ("ev", "art", "arts"))] == [
            f"{prefix}:ev:{live.id}"]
    finally:
        for store in stores:
            await store.close()


@pytest.mark.anyio
async def test_jobs_queued_before_fair_share_are_still_claimed_and_listed(
        anyio_backend: Any, redis_server: RedisServer) -> None:
    """A queue member written by a genq from before fair share (``<16 hex>:<id>``, no
    tag) is claimed and listed like any other after an upgrade."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        job = await submit(store, owner="alice")
        r = store._r()
        member = (await r.hget(f"{prefix}:job:{job.id}", "qm")).decode()
        old = f"{member[16:32]}:{job.id}"  # the arrival part, no tag
        await r.zrem(f"{prefix}:q:render", member)
        await r.zadd(f"{prefix}:q:render", {old: 0})
        await r.hset(f"{prefix}:job:{job.id}", "qm", old)
        assert await store.queue_position(job.id) == 1
        assert [j.id for j in await store.list_jobs(status=JobStatus.QUEUED)] == [job.id]
        claimed = await store.claim(["render"], "w1", LEASE)
        assert claimed is not None and claimed.id == job.id
        await store.finish(job.id, JobStatus.SUCCEEDED, result=1, lease=claimed.lease)
        assert await store.claim(["render"], "w1", LEASE) is None
    finally:
        await store.close()


@pytest.mark.anyio
async def test_an_artifact_over_the_size_limit_is_refused_by_name(
        anyio_backend: Any, redis_server: RedisServer) -> None:
    store = store_from_url(f"{redis_server.url}?prefix=big&max_artifact_mb=1")
    await store.open()
    try:
        fits = await store.put_artifact("j1", "small.png", "image/png", b"x" * (1 << 20))
        assert fits.size == 1 << 20
        with pytest.raises(ArtifactTooLarge) as caught:
            await store.put_artifact("j1", "huge.png", "image/png", b"x" * ((1 << 20) + 1))
        assert caught.value.status == 413 and "huge.png" in str(caught.value)
        assert caught.value.detail["limit"] == 1 << 20
    finally:
        await store.close()


class LostReplies(RedisStore):
    """Redis applies the next ``lose`` append calls, and their replies are lost: the
    store answers StoreUnavailable as after a connection cut mid-reply."""

    lose = 0

    async def _run_appends(self, args: list[Any]) -> list[int]:
        lasts = await super()._run_appends(args)
        if self.lose:
            self.lose -= 1
            raise StoreUnavailable("the reply was lost (test)")
        return lasts


@pytest.mark.anyio
async def test_a_batch_sent_again_after_a_lost_reply_is_written_once(
        anyio_backend: Any, redis_server: RedisServer) -> None:
    store = LostReplies(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}")
    await store.open()
    try:
        job = await submit(store)
        claimed = await store.claim(["render"], "w1", LEASE)
        assert claimed is not None
        log = JobLog(store, job.id, claimed.lease)
        store.lose = 2  # the first batch lands, twice unacknowledged, then is acknowledged
        await log.add_many([(EventType.OUTPUT, {"chunk": c}) for c in "abc"])
        await log.drain()
        await log.add_many([(EventType.OUTPUT, {"chunk": "d"})])
        await log.drain()
        events = await store.read_events(job.id)
    finally:
        await store.close()
    assert [e.id for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.data.get("chunk") for e in events[2:]] == ["a", "b", "c", "d"]


def test_time_redis_was_away_does_not_count_against_a_lease() -> None:
    circuit = Circuit()
    circuit.outages.append((100.0, 140.0))  # Redis away from t=100 to t=140
    # Granted at 95 for 10 s: 5 s were left when Redis went away, so 5 s after it is back.
    assert not circuit.lease_lapsed(95.0, 105.0, 144.0)
    assert circuit.lease_lapsed(95.0, 105.0, 145.0)
    # Ended before the outage: lapsed on time (its worker was gone before Redis was).
    assert circuit.lease_lapsed(80.0, 99.0, 100.0)
    # Renewed after the outage: its own end, no extension.
    assert circuit.lease_lapsed(141.0, 151.0, 151.0)
    # Unknown start (a job claimed before this version): extended, to be safe.
    assert not circuit.lease_lapsed(None, 105.0, 144.0)
