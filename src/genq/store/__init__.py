"""Storage backends behind one protocol, chosen by URL.

Which URL: ``store_url`` (given, else ``$GENQ_STORE``, else ``$GENQ_DB``, else
``.genq/genq.sqlite3``; genq.store.urls). Its forms:

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
--retain`` and ``genq worker --retain`` override it (``store_from_url(url, retain=)``).
"""

from __future__ import annotations

import os

from genq.store.base import NewEvent, Store, StoreBase, SubmitPolicy, Submitted
from genq.store.sqlite import SQLiteStore
from genq.store.urls import DEFAULT_STORE_URL, UNSET, Unset, scheme, store_url

__all__ = ["DEFAULT_STORE_URL", "NewEvent", "SQLiteStore", "Store", "StoreBase",
           "SubmitPolicy", "Submitted", "store_from_url", "store_url"]


def store_from_url(url: str | os.PathLike[str], *,
                   retain: float | Unset | None = UNSET) -> Store:
    """A new, unopened store for ``url`` (see the module docstring for the forms): the
    scheme picks the backend, whose ``from_url`` reads the rest. ``retain`` (``--retain``)
    overrides the URL's retention window."""
    text = os.fspath(url)
    kind = scheme(text)
    if kind in ("", "file", "sqlite"):
        return SQLiteStore.from_url(text, retain=retain)
    if kind in ("redis", "rediss", "unix"):
        from genq.store.redis import RedisStore  # imports redis-py only when asked for

        return RedisStore.from_url(text, retain=retain)
    raise ValueError(f"unknown store URL {text!r}: use sqlite:///path or "
                     "redis://host:port/db")
