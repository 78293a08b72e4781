"""Finds the job function that blocks the event loop, and names it.

An ``async def`` that calls blocking code (``for token in TextIteratorStreamer``,
``time.sleep``, ``requests.get``) stops every stream, request and heartbeat of the
process while it waits. Python cannot preempt it, so genq does the next best thing: a
watchdog thread samples the loop thread's stack every few milliseconds and adds the
time to the registered function it finds running there (an async function that awaits
is never found: it is off the stack while it waits); a heartbeat on the loop tells a
loop stuck elsewhere from one idling in select(). Many short stalls (one per token) add
up as surely as one long one, and the report names the function, the time and the line
it stood on.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

BEAT = 0.005  # seconds between heartbeats on the loop
SAMPLE = 0.01  # seconds between looks from the watchdog thread
STUCK = 0.01  # a heartbeat this late means the loop is stuck in someone's code


@dataclass(frozen=True, slots=True)
class Block:
    """The loop was stuck for ``seconds`` in all, running ``function`` (a registered
    name, or None when no job function was on the stack), last seen at ``where``."""

    function: str | None
    seconds: float
    where: str


def function_codes(functions: Mapping[str, Any]) -> dict[CodeType, str]:
    """The code objects of the registered functions (unwrapped from decorators)."""
    codes: dict[CodeType, str] = {}
    for name, fn in functions.items():
        code = getattr(inspect.unwrap(fn), "__code__", None)
        if isinstance(code, CodeType):
            codes[code] = name
    return codes


def _culprit(frame: FrameType | None, codes: Mapping[CodeType, str]) -> tuple[str | None, str]:
    """The registered function nearest the top of the stack and its line (the call
    that blocks), or None and the innermost line."""
    innermost = ""
    depth = 0
    while frame is not None and depth < 200:
        code = frame.f_code
        where = f"{code.co_filename}:{frame.f_lineno}"
        innermost = innermost or where
        if code in codes:
            return codes[code], where
        frame = frame.f_back
        depth += 1
    return None, innermost


class LoopWatch:
    """Adds up, per function, the time the running loop spent stuck in it; ``take``
    hands over the sums since the last call."""

    def __init__(self, codes: Mapping[CodeType, str]) -> None:
        self._codes = dict(codes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._last_beat = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._stuck: dict[str | None, list[Any]] = {}  # function -> [seconds, where]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat()
        threading.Thread(target=self._watch, name="genq-loopwatch", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()

    def take(self) -> list[Block]:
        with self._lock:
            stuck, self._stuck = self._stuck, {}
        return [Block(function, seconds, where)
                for function, (seconds, where) in stuck.items()]

    def _beat(self) -> None:
        assert self._loop is not None
        self._last_beat = time.monotonic()
        if not self._stopped.is_set():
            self._handle = self._loop.call_later(BEAT, self._beat)

    def _watch(self) -> None:
        looked = time.monotonic()
        while not self._stopped.wait(SAMPLE):
            now = time.monotonic()
            since, looked = now - looked, now
            frame = sys._current_frames().get(self._loop_thread)
            function, where = _culprit(frame, self._codes)
            del frame
            # A job function on the stack is holding the loop right now (an async one
            # that awaits is off the stack); anything else counts only if the loop is
            # late, which rules out a loop idling in select().
            if function is None and now - self._last_beat < STUCK:
                continue
            with self._lock:
                entry = self._stuck.setdefault(function, [0.0, where])
                entry[0] += since
                if function is not None:
                    entry[1] = where
