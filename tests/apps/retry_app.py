"""Functions whose first run is lost part way, for the tests of what the clients, the
Gradio adapter and ``genq run`` show of a job that started over.

Each run of a tag counts in ``runs`` (this process: ``app.local()`` or a ``LiveServer``
thread), so the first run of a tag behaves differently from the next: it yields
``LOST`` chunks, then fails with a retryable error (``flaky_tokens``) or waits until a
server shutdown puts it back in the queue (``stalls_first``); the next run yields
``KEPT`` chunks and ends.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import anyio

import genq

app = genq.App("retry-tests")

LOST, KEPT = 39, 100
runs: Counter[str] = Counter()
_lock = threading.Lock()


def lost_chunks() -> list[str]:
    return [f"lost{i} " for i in range(LOST)]


def kept_chunks() -> list[str]:
    return [f"t{i} " for i in range(KEPT)]


def _run_number(tag: str) -> int:
    with _lock:
        runs[tag] += 1
        return runs[tag]


@app.function(concurrency=4, retries=1, retry_on=(ConnectionError,), retry_backoff=0.05)
def flaky_tokens(tag: str, lost: int = LOST, delay: float = 0.0) -> Iterator[str]:
    """First run: ``lost`` tokens, then a dropped upstream connection (retried)."""
    if _run_number(tag) == 1:
        for chunk in lost_chunks()[:lost]:
            time.sleep(delay)
            yield chunk
        raise ConnectionError("the upstream model dropped the connection")
    yield from kept_chunks()


@app.function(concurrency=4)
async def stalls_first(tag: str) -> AsyncIterator[str]:
    """First run: ``LOST`` tokens, then it waits until the server stops (and requeues it)."""
    first = _run_number(tag) == 1
    for chunk in lost_chunks() if first else kept_chunks():
        yield chunk
    if first:
        await anyio.sleep_forever()
