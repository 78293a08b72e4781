"""The app behind the multi-process Redis tests (tests/test_cluster.py).

Front ends (``genq serve --no-workers``) and workers (``genq worker``) each import it as
``apps.cluster_app:app`` with ``tests/`` on ``PYTHONPATH``. Every function has retries, so
a job whose worker is killed runs again elsewhere instead of failing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import anyio

import genq

app = genq.App("cluster-tests")


@app.function(concurrency=8, retries=3)
def square(x: int) -> int:
    time.sleep(0.01)
    return x * x


@app.function(concurrency=8, retries=3)
async def echo(text: str) -> str:
    await anyio.sleep(0.01)
    return text


@app.function(concurrency=4, retries=3)
def chunks(tag: str, n: int = 40, delay: float = 0.02) -> Iterator[str]:
    """A blocking sync generator: ``tag:0``, ``tag:1``... one every ``delay`` s."""
    for i in range(n):
        time.sleep(delay)
        yield f"{tag}:{i}"


@app.function(concurrency=1, retries=2)
def paced(n: int = 30, delay: float = 0.1) -> Iterator[str]:
    """Chunks that say which process wrote them, slowly (for pausing a worker)."""
    for i in range(n):
        time.sleep(delay)
        yield f"{os.getpid()}:{i}"


@app.function(concurrency=3, max_running=2)
def limited(seconds: float = 0.3) -> int:
    """At most 2 run at once in the whole cluster, whatever the workers' concurrency."""
    time.sleep(seconds)
    return os.getpid()
