"""Functions that block the event loop the way real code does, for tests/test_loop_blocking.py.

``streamer_tokens`` is the seed scenario: an ``async def`` generator iterating a blocking
token streamer (transformers' ``TextIteratorStreamer`` pattern: generation in a thread,
tokens handed over through a queue the consumer blocks on). ``fixed_tokens`` is the
same done right with ``genq.iterate_in_thread``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator

import genq

app = genq.App("blocking-tests")


def token_streamer(n: int, interval: float) -> Iterator[str]:
    """Tokens produced by a thread every ``interval`` s; iterating blocks on a queue."""
    tokens: queue.Queue[str | None] = queue.Queue()

    def generate() -> None:
        for i in range(n):
            time.sleep(interval)
            tokens.put(f"t{i} ")
        tokens.put(None)

    threading.Thread(target=generate, daemon=True).start()
    while (token := tokens.get()) is not None:
        yield token


@app.function(concurrency=4)
async def streamer_tokens(n: int = 20, interval: float = 0.02) -> AsyncIterator[str]:
    """The mistake: blocking iteration inside an async generator."""
    for token in token_streamer(n, interval):
        yield token


@app.function(concurrency=4)
async def fixed_tokens(n: int = 20, interval: float = 0.02) -> AsyncIterator[str]:
    """The fix the warning points to."""
    async for token in genq.iterate_in_thread(token_streamer(n, interval)):
        yield token


@app.function()
async def sleeps(seconds: float = 0.5) -> str:
    """One long block: time.sleep in a coroutine."""
    time.sleep(seconds)  # noqa: ASYNC251 - the mistake under test
    return "slept"
