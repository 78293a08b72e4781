"""How much of the event loop an async generator that blocks it may take.

An ``async def`` generator that calls blocking code (the streaming-chat mistake: a sync
streamer wrapped in an async generator) holds the loop for every item it makes. Several
of them, stepped once per loop turn each, keep the loop busy almost all the time, and a
request that needs a few loop turns waits for a few of their steps at every turn.

Once a step is seen to block (it made its item without ever giving the loop a turn, and
took longer than ``BLOCKING_STEP``), that generator's next steps take turns: one blocking
step at a time across the whole loop, each followed by a pause as long as the step
(at most ``MAX_PAUSE``) in which the loop serves everyone else. Blocking then takes at
most about half of the loop's time and a request waits for at most one step, at the
cost of those generators' own speed; ``@app.function(isolate=True)`` (genq.isolation)
gives them back their speed on a loop of their own. A generator whose step gives the
loop a turn again runs freely again.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Generator
from typing import Any

BLOCKING_STEP = 0.02  # seconds a step may hold the loop before its generator takes turns
MAX_PAUSE = 0.5  # seconds the loop is left to others after one blocking step, at most

_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


class Step:
    """Awaits one step of a generator and records whether it suspended (let the loop run)
    and, if it did not, how long it held the loop. Most generators suspend; a turn given
    to the loop after each item of those cost a task step per item, a fifth of a core at
    250 streams of 100 items/s."""

    __slots__ = ("_awaitable", "held", "suspended")

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self._awaitable = awaitable
        self.suspended = False
        self.held = 0.0  # seconds the loop was held by a step that never suspended

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self._awaitable.__await__()
        started = time.perf_counter()
        try:
            pending = inner.send(None)
        except StopIteration as done:
            self.held = time.perf_counter() - started
            return done.value
        self.suspended = True
        while True:  # forward what the event loop sends or throws (cancellation)
            try:
                sent = yield pending
            except BaseException as exc:
                try:
                    pending = inner.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = inner.send(sent)
                except StopIteration as done:
                    return done.value

    @property
    def blocked(self) -> bool:
        return not self.suspended and self.held >= BLOCKING_STEP


def turn() -> asyncio.Lock:
    """``async with turn():`` around the step of a generator known to block: one such
    step at a time on this loop."""
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    return lock


async def pause(step: Step) -> None:
    """After a blocking step: leave the loop to others for as long as it was held."""
    await asyncio.sleep(min(step.held, MAX_PAUSE))
