"""The Redis store: the shared Store contract against a real redis-server of the test's
own (never the machine's shared one on 6379), plus what is Redis's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer
from store_contract import StoreContract, StoreFactory

from genq.store import store_from_url
from genq.store.redis import ArtifactTooLarge, RedisStore


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), appendfsync="everysec") as server:
        yield server


class TestRedisStoreContract(StoreContract):
    @pytest.fixture
    async def store_factory(self, anyio_backend: Any,
                            redis_server: RedisServer) -> AsyncIterator[StoreFactory]:
        stores: list[RedisStore] = []

        async def make() -> RedisStore:
            # A prefix of its own: every store starts empty, on one server.
            store = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:12]}")
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
    with pytest.raises(ValueError, match="unknown store URL"):
        store_from_url("postgres://localhost/genq")
    with pytest.raises(ValueError, match="retry_for"):
        store_from_url("redis://localhost/0?retry_for=soon")


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
