"""The app behind the HTTP API, client and CLI tests: small functions of every kind.

A subprocess imports it as ``apps.http_app:app`` with ``tests/`` on ``PYTHONPATH``.
``calls`` counts invocations of ``counted`` per tag, so a test can prove a job ran once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Annotated

import anyio
from pydantic import Field

import genq
from genq.demo.png import encode_rgb

app = genq.App("http-tests")

calls: Counter[str] = Counter()
_calls_lock = threading.Lock()


@app.function(concurrency=4)
def add(x: int, y: int = 0) -> int:
    """Add two integers."""
    return x + y


@app.function(concurrency=4)
def tokens(n: Annotated[int, Field(ge=0, le=10_000)] = 5,
           delay: Annotated[float, Field(ge=0, le=1)] = 0.0) -> Iterator[str]:
    """Stream ``n`` text chunks ``t0 ``, ``t1 ``... from a blocking sync generator."""
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield f"t{i} "


@app.function(concurrency=2)
async def slow(seconds: Annotated[float, Field(gt=0, le=600)] = 30.0,
               progress: genq.Progress = genq.Progress()) -> str:
    """Sleep in 0.05 s steps, reporting progress: a long job to cancel or interrupt."""
    steps = max(1, round(seconds / 0.05))
    for i in range(steps):
        progress(i / steps, desc="sleeping")
        await anyio.sleep(0.05)
    return f"slept {seconds} s"


@app.function(concurrency=2)
def fail(message: str = "boom") -> None:
    """Always raise ValueError(message)."""
    raise ValueError(message)


@app.function(concurrency=2)
def image(side: Annotated[int, Field(ge=1, le=64)] = 4) -> genq.Image:
    """A ``side`` x ``side`` PNG gradient."""
    rows = [bytes(v for x in range(side) for v in (x * 40 % 256, y * 40 % 256, 128))
            for y in range(side)]
    return genq.Image(encode_rgb(side, side, rows), name="tile.png")


@app.function(concurrency=4)
def counted(tag: str) -> str:
    """Count one invocation for ``tag`` and return it."""
    with _calls_lock:
        calls[tag] += 1
    return tag


@app.function(concurrency=1, max_queue=2)
def bounded(x: int = 0) -> int:
    """At most two queued jobs: the third submission is answered 429."""
    return x


@app.function(concurrency=1)
def echo(text: str) -> int:
    """The length of ``text`` (for request-size tests)."""
    return len(text)
