"""Which store a process opens: the URL from the arguments or the environment, the
scheme's backend, and each backend's own ``from_url`` (genq.store, genq.store.urls).
The forms and error messages users see are also checked in test_store_redis.py and
test_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from genq.store import DEFAULT_STORE_URL, SQLiteStore, store_from_url, store_url
from genq.store.redis import DEFAULT_MAX_ARTIFACT_BYTES, RedisStore
from genq.store.retention import DEFAULT_RETAIN


def test_store_url_prefers_the_argument_then_genq_store_then_genq_db(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GENQ_STORE", raising=False)
    monkeypatch.delenv("GENQ_DB", raising=False)
    assert store_url() == DEFAULT_STORE_URL == "sqlite:///.genq/genq.sqlite3"
    monkeypatch.setenv("GENQ_DB", "db.sqlite3")
    assert store_url() == "db.sqlite3"
    monkeypatch.setenv("GENQ_STORE", "redis://localhost/1")
    assert store_url() == "redis://localhost/1"
    assert store_url(tmp_path / "given.sqlite3") == str(tmp_path / "given.sqlite3")


def test_sqlite_urls_and_paths() -> None:
    relative = SQLiteStore.from_url("sqlite:///rel/genq.sqlite3?retain=30m")
    assert relative.path == Path("rel/genq.sqlite3") and relative.retain == 1800
    assert SQLiteStore.from_url("sqlite:////abs/genq.sqlite3").path == Path("/abs/genq.sqlite3")
    plain = SQLiteStore.from_url("some/dir/genq.sqlite3")
    assert plain.path == Path("some/dir/genq.sqlite3") and plain.retain == DEFAULT_RETAIN
    assert SQLiteStore.from_url("file:///tmp/genq.sqlite3").path == Path("/tmp/genq.sqlite3")
    with pytest.raises(ValueError, match="sqlite:///relative/path or"):
        SQLiteStore.from_url("sqlite://genq.sqlite3")
    with pytest.raises(ValueError, match="not a SQLite URL"):
        SQLiteStore.from_url("redis://localhost/0")


def test_redis_urls_keep_genq_options_and_pass_the_rest_on() -> None:
    store = RedisStore.from_url("rediss://:pw@host:6380/3?socket_timeout=5&prefix=p"
                                "&max_artifact_mb=2")
    assert store.url == "rediss://:pw@host:6380/3?socket_timeout=5"
    assert store.prefix == "p" and store.max_artifact_bytes == 2 << 20
    assert store.retry_for == 15.0 and store.retain == DEFAULT_RETAIN
    assert RedisStore.from_url("redis://h/0").max_artifact_bytes == DEFAULT_MAX_ARTIFACT_BYTES
    with pytest.raises(ValueError, match="max_artifact_mb"):
        RedisStore.from_url("redis://h/0?max_artifact_mb=big")
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisStore.from_url("sqlite:///genq.sqlite3")


def test_a_given_retention_window_overrides_the_urls() -> None:
    for url in ("redis://h/0?retain=12h", "sqlite:///rel/g.sqlite3?retain=12h",
                "rel/g.sqlite3"):
        assert store_from_url(url, retain=60.0).retain == 60.0
        assert store_from_url(url, retain=None).retain is None  # keep forever
    # A bad window in the URL is refused even when overridden: the URL is wrong.
    with pytest.raises(ValueError, match="retention 'soon'"):
        store_from_url("sqlite:///rel/g.sqlite3?retain=soon", retain=60.0)
