"""Per-function readiness: can any live worker run this function's jobs now, and if not,
why not.

Workers report the state of their models per function (``WorkerInfo.states``, written by
genq.serving.host); a worker claims a function's jobs only while that function is ready
on it. This module folds the whole cluster's reports into one answer per function of
the app, so the three places that tell a user why nothing runs say the same thing:
``/readyz`` (is every function served?), the job view's ``waiting`` (why is my queued job
still queued?) and the dashboard.

A function is ``ready`` when at least one live worker serving it reports it ready;
else ``loading`` when at least one is loading its models; else ``failed`` when at least
one's setup failed (with the error and the next try); else ``no_worker``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from genq.models import WorkerInfo

READY, LOADING, FAILED, NO_WORKER = "ready", "loading", "failed", "no_worker"
CACHE_SECONDS = 0.5  # a cluster read serves every job view asked for within this long


@dataclass(frozen=True, slots=True)
class FunctionReadiness:
    """One function across the cluster: its state and how many live workers are in each
    state for it; for ``loading``, since when (the earliest current attempt); for
    ``failed``, which model failed, its error and the earliest next try."""

    function: str
    state: str
    ready: int = 0
    loading: int = 0
    failed: int = 0
    since: float | None = None
    model: str | None = None
    error: str | None = None
    retry_at: float | None = None

    def to_dict(self, *, detail: bool, now: float | None = None) -> dict[str, Any]:
        """The per-function view: state and worker counts for anyone (a probe); the
        model, the seconds so far, the error and the next try only with ``detail``
        (an error can name paths and hosts of the machine that raised it)."""
        view: dict[str, Any] = {"state": self.state, "ready": self.ready,
                                "loading": self.loading, "failed": self.failed}
        if detail and self.state in (LOADING, FAILED):
            now = time.time() if now is None else now
            view.update(since=self.since, model=self.model)
            if self.state == LOADING and self.since is not None:
                view["seconds"] = round(max(0.0, now - self.since), 1)
            if self.state == FAILED:
                view.update(error=self.error, retry_at=self.retry_at)
        return view

    def waiting(self, now: float | None = None) -> dict[str, Any] | None:
        """Why a queued job of this function waits, as the job view's ``waiting``:
        ``{"reason", "message", "since"}``; None when a worker is ready for it (it only
        waits its turn in the queue, which ``queue_position`` already says)."""
        if self.state == READY:
            return None
        now = time.time() if now is None else now
        if self.state == LOADING:
            seconds = 0 if self.since is None else max(0, math.floor(now - self.since))
            message = f"model loading ({seconds} s so far)"
        elif self.state == FAILED:
            retry = ("retrying now" if self.retry_at is None or self.retry_at <= now
                     else f"retrying in {math.ceil(self.retry_at - now)} s")
            message = f"model {self.model} failed to load ({self.error}), {retry}"
        else:
            message = "no worker serves this function"
        return {"reason": self.state, "message": f"waiting for a worker: {message}",
                "since": self.since}


def function_readiness(function: str, workers: Iterable[WorkerInfo]) -> FunctionReadiness:
    """``function``'s readiness over ``workers`` (the live ones, as the store lists them)."""
    by_state: dict[str, list[WorkerInfo]] = {READY: [], LOADING: [], FAILED: []}
    for worker in workers:
        if function in worker.functions:
            by_state.setdefault(worker.state_of(function), []).append(worker)
    counts = len(by_state[READY]), len(by_state[LOADING]), len(by_state[FAILED])
    if by_state[READY]:
        return FunctionReadiness(function, READY, *counts)
    if by_state[LOADING]:
        reports = [_models(w, function, LOADING) for w in by_state[LOADING]]
        started = [float(s) for w in by_state[LOADING]
                   if (s := w.states[function].get("since")) is not None]
        first = next((m for ms in reports for m in ms), {})
        return FunctionReadiness(function, LOADING, *counts,
                                 since=min(started, default=None), model=first.get("model"))
    if by_state[FAILED]:
        failures = [m for w in by_state[FAILED] for m in _models(w, function, FAILED)]
        # The failure whose next try comes first: the soonest the function may be served.
        soonest = min(failures, key=lambda m: m.get("retry_at") or math.inf, default={})
        return FunctionReadiness(function, FAILED, *counts, since=soonest.get("since"),
                                 model=soonest.get("model"), error=soonest.get("error"),
                                 retry_at=soonest.get("retry_at"))
    return FunctionReadiness(function, NO_WORKER, *counts)


def _models(worker: WorkerInfo, function: str, state: str) -> list[Mapping[str, Any]]:
    """The reports of ``worker``'s models for ``function`` in ``state``."""
    return [m for m in worker.states.get(function, {}).get("models", ())
            if m.get("state") == state]


def cluster_readiness(functions: Iterable[str],
                      workers: Iterable[WorkerInfo]) -> dict[str, FunctionReadiness]:
    workers = list(workers)
    return {name: function_readiness(name, workers) for name in functions}


class Readiness:
    """The app's functions' readiness, read from the store at most every CACHE_SECONDS:
    a page of a hundred queued jobs, or many clients polling their jobs, costs one read
    of the workers' reports rather than one each."""

    def __init__(self, functions: Collection[str],
                 read_workers: Callable[[], Awaitable[list[WorkerInfo]]],
                 cache_seconds: float = CACHE_SECONDS) -> None:
        self._functions = functions  # the app's registry itself: read at each refresh
        self._read = read_workers
        self._cache_seconds = cache_seconds
        self._view: dict[str, FunctionReadiness] | None = None
        self._read_at = -math.inf

    async def view(self) -> dict[str, FunctionReadiness]:
        if self._view is None or time.monotonic() - self._read_at > self._cache_seconds:
            workers = await self._read()
            self._view = cluster_readiness(self._functions, workers)
            self._read_at = time.monotonic()
        return self._view

    async def waiting(self, function: str) -> dict[str, Any] | None:
        """Why a queued job of ``function`` waits (FunctionReadiness.waiting), or None."""
        readiness = (await self.view()).get(function)
        return None if readiness is None else readiness.waiting()
