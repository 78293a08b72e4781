"""Storage backends behind one protocol, chosen by URL.

* ``sqlite:///relative/path.sqlite3``, ``sqlite:////absolute/path.sqlite3``, or a bare
  path: the embedded store, one process on one machine (the default). A ``sqlite://``
  URL takes one query parameter, ``retain`` (below).
* ``redis://[:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock``:
  the Redis store, shared by front ends and workers on many machines. Query
  parameters: ``prefix`` (default ``genq``) keeps several deployments apart on one
  Redis database; ``retry_for`` (seconds, default 15) is how long a call waits for an
  unreachable Redis before failing; ``max_artifact_mb`` (default 64) caps one artifact.
  See docs/redis.md.

Both take ``retain`` (default ``7d``; ``30m``, ``12h``, ``2w``, seconds, or ``0`` /
``forever``): how long finished jobs are kept (genq.store.retention). ``genq serve
--retain`` and ``genq worker --retain`` override it.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from genq.store.base import NewEvent, Store, SubmitPolicy, Submitted
from genq.store.retention import DEFAULT_RETAIN, parse_retain
from genq.store.sqlite import SQLiteStore

DEFAULT_STORE_URL = "sqlite:///.genq/genq.sqlite3"

__all__ = ["DEFAULT_STORE_URL", "NewEvent", "SQLiteStore", "Store", "SubmitPolicy",
           "Submitted", "store_from_url"]


def store_from_url(url: str | os.PathLike[str]) -> Store:
    """A new, unopened store for ``url`` (see the module docstring for the forms)."""
    text = os.fspath(url)
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme in ("", "file"):
        return SQLiteStore(text.removeprefix("file://"))
    query = {k: v[-1] for k, v in parse_qs(urlsplit(text).query).items()}
    try:
        retain = parse_retain(query["retain"]) if "retain" in query else DEFAULT_RETAIN
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if scheme == "sqlite":
        path = text[len("sqlite://"):].split("?", 1)[0]
        if unknown := sorted(set(query) - {"retain"}):
            raise ValueError(f"{text!r}: a SQLite URL takes only the parameter retain, "
                             f"not {', '.join(unknown)}")
        if not path.startswith("/") or path == "/":
            raise ValueError(f"{text!r}: a SQLite URL is sqlite:///relative/path or "
                             "sqlite:////absolute/path")
        return SQLiteStore(path[1:], retain=retain)
    if scheme in ("redis", "rediss", "unix"):
        from genq.store.redis import RedisStore  # imports redis-py only when asked for

        try:
            retry_for = float(query.get("retry_for", 15.0))
            max_artifact_bytes = int(float(query.get("max_artifact_mb", 64)) * (1 << 20))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        return RedisStore(_without_query_params(text, ("prefix", "retry_for",
                                                       "max_artifact_mb", "retain")),
                          prefix=query.get("prefix", "genq"), retry_for=retry_for,
                          max_artifact_bytes=max_artifact_bytes, retain=retain)
    raise ValueError(f"unknown store URL {text!r}: use sqlite:///path or "
                     "redis://host:port/db")


def _without_query_params(url: str, names: tuple[str, ...]) -> str:
    """``url`` without genq's own parameters (the rest go to redis-py)."""
    parts = urlsplit(url)
    kept = "&".join(p for p in parts.query.split("&") if p and p.split("=", 1)[0] not in names)
    return parts._replace(query=kept).geturl()
