"""``stores``: a parametrized fixture making stores of one kind, SQLite or Redis, that
share their data (one file, one Redis prefix): a second store from ``stores()`` is the
same data opened again, as a restarted process or another front end would.

    async def test_x(stores: StoreMaker) -> None:
        first = stores()            # not opened: an Engine opens and closes it
        again = stores()            # the same jobs, seen from a "restarted" process
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genq.store.base import Store
from genq.store.redis import RedisStore
from genq.store.sqlite import SQLiteStore
from tests.support.redis_server import RedisServer

StoreMaker = Callable[[], Store]


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), appendfsync=None) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    if request.param == "sqlite":
        path = tmp_path / "genq.sqlite3"
        return lambda: SQLiteStore(path)
    server: RedisServer = request.getfixturevalue("shared_redis")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return lambda: RedisStore(server.url, prefix=prefix)
