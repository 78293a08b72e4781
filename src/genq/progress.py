"""Progress reporting from inside job code, and where sync code learns it must stop.

``progress: genq.Progress = genq.Progress()`` as a parameter (like Gradio's) marks it for
injection: each run gets a bound ``Progress`` whose calls become ``progress`` events. An
unbound one (the function called directly, outside genq) silently ignores calls.

Calls are cheap and thread-safe: each one only stores the latest state under a lock;
at most one flush per ``min_interval`` carries it to the job's log on the event loop,
so a tight loop of a million updates writes a handful of events, and the last state
always lands.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, TypeVar

from genq.errors import Cancelled

T = TypeVar("T")

ProgressSink = Callable[[dict[str, Any]], None]  # called on the loop with one state
LogSink = Callable[[str, str], None]  # (message, level), called on the loop


class Progress:
    """Report fraction, description, counts, rate and ETA; stop when the job is cancelled."""

    def __init__(self, *, min_interval: float = 0.1) -> None:
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._scheduled = False
        self._last_emit = 0.0
        self._cancelled: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sink: ProgressSink | None = None
        self._log_sink: LogSink | None = None
        self._closed = False

    # -- used by genq ----------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop, sink: ProgressSink,
             log_sink: LogSink) -> Progress:
        """A fresh Progress for one run, reporting to ``sink`` on ``loop``."""
        bound = Progress(min_interval=self.min_interval)
        bound._loop = loop
        bound._loop_thread = threading.get_ident()
        bound._sink = sink
        bound._log_sink = log_sink
        return bound

    def cancel(self, reason: str) -> None:
        """Make the next call from sync job code raise ``genq.Cancelled(reason)``."""
        self._cancelled = reason

    def close(self) -> None:
        """Flush the last state now (on the loop) and ignore later calls."""
        self._flush()
        self._closed = True

    # -- used by job code ------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancelled is not None

    def check(self) -> None:
        """Raise ``genq.Cancelled`` if the job was cancelled or timed out (sync code only)."""
        if self._cancelled is not None and threading.get_ident() != self._loop_thread:
            raise Cancelled(self._cancelled)

    def __call__(self, fraction: float | None = None, desc: str | None = None, *,
                 current: float | None = None, total: float | None = None,
                 unit: str | None = None, rate: float | None = None,
                 eta: float | None = None) -> None:
        """Report ``fraction`` in [0, 1] (or ``current`` of ``total``) and a description,
        optionally with a ``rate`` (units per second) and an ``eta`` (seconds left)."""
        if fraction is None and current is not None and total:
            fraction = current / total
        state: dict[str, Any] = {"fraction": None if fraction is None
                                 else min(1.0, max(0.0, float(fraction)))}
        if desc is not None:
            state["description"] = desc
        if current is not None:
            state["current"] = current
        if total is not None:
            state["total"] = total
        if unit is not None:
            state["unit"] = unit
        if rate is not None:
            state["rate"] = round(rate, 3)
        if eta is not None:
            state["eta"] = round(eta, 3)
        self._report(state)

    def tqdm(self, iterable: Iterable[T], desc: str | None = None, total: int | None = None,
             unit: str = "steps") -> Iterator[T]:
        """Wrap an iterable like tqdm: report count, fraction, rate and ETA as it goes."""
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        start = time.monotonic()
        count = 0
        self._report(self._tqdm_state(count, total, desc, unit, start))
        for item in iterable:
            yield item
            count += 1
            self._report(self._tqdm_state(count, total, desc, unit, start))

    def log(self, message: str, level: str = "info") -> None:
        """Add a ``log`` event to the job (not coalesced)."""
        self.check()
        if self._log_sink is None or self._loop is None or self._closed:
            return
        self._on_loop(self._log_sink, message, level)

    # -- internals -------------------------------------------------------------------
    @staticmethod
    def _tqdm_state(count: int, total: int | None, desc: str | None, unit: str,
                    start: float) -> dict[str, Any]:
        elapsed = time.monotonic() - start
        rate = count / elapsed if elapsed > 0 and count else None
        state: dict[str, Any] = {
            "fraction": count / total if total else None, "current": count, "total": total,
            "unit": unit, "rate": None if rate is None else round(rate, 3),
            "eta": round((total - count) / rate, 3) if rate and total else None,
        }
        if desc is not None:
            state["description"] = desc
        return state

    def _report(self, state: dict[str, Any]) -> None:
        self.check()
        if self._sink is None or self._loop is None or self._closed:
            return
        with self._lock:
            self._pending = state
            if self._scheduled:
                return
            self._scheduled = True
        self._on_loop(self._schedule_flush)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            try:
                self._loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is gone: the job is over
                pass

    def _schedule_flush(self) -> None:
        assert self._loop is not None
        wait = self._last_emit + self.min_interval - time.monotonic()
        if wait <= 0:
            self._flush()
        else:
            self._loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        with self._lock:
            state, self._pending = self._pending, None
            self._scheduled = False
        if state is not None and self._sink is not None and not self._closed:
            self._last_emit = time.monotonic()
            self._sink(state)
