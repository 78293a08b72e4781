"""Group commit of event appends on Redis: many jobs' events in one script call.

A worker process runs many jobs, each appending its own events (output chunks, progress)
through its JobLog. Sent one call per job, each append pays a round trip and redis-py's
per-command cost (a few syscalls: the bulk of the CPU on a busy worker). Here, while one
APPEND call is in flight, the appends that arrive meanwhile wait and then go out together
as the next call, like the SQLite writer's group commit: at low load an append leaves at
once; under load, calls grow instead of queueing up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from genq.models import Lease

MAX_JOBS_PER_CALL = 256

RunAppends = Callable[[list[Any]], Awaitable[list[int]]]


@dataclass(slots=True)
class _Append:
    job_id: str
    lease: Lease
    first: int | None  # the first event id it must get ('' to the script when unknown)
    packed: str
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class AppendBatcher:
    def __init__(self, run: RunAppends) -> None:
        self._run = run  # ARGV tail for the APPEND script -> each job's last id (-1: lost)
        self._waiting: list[_Append] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, job_id: str, lease: Lease, first: int | None, packed: str) -> int:
        """The job's last event id once written; -1 if its lease no longer holds it."""
        request = _Append(job_id, lease, first, packed)
        self._waiting.append(request)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return await asyncio.shield(request.done)

    async def _write(self) -> None:
        while self._waiting:
            batch: list[_Append] = []
            later: list[_Append] = []
            seen: set[str] = set()
            for request in self._waiting:
                # One append per job per call: a second one of the same job must follow
                # the first's result (JobLog sends one at a time; this keeps it so).
                if request.job_id in seen or len(batch) >= MAX_JOBS_PER_CALL:
                    later.append(request)
                else:
                    seen.add(request.job_id)
                    batch.append(request)
            self._waiting = later
            args: list[Any] = []
            for r in batch:
                args += (r.job_id, r.lease.worker_id, r.lease.token,
                         "" if r.first is None else r.first, r.packed)
            try:
                lasts = await self._run(args)
            except Exception as exc:  # StoreUnavailable after the store's retries
                for r in batch:
                    if not r.done.done():
                        r.done.set_exception(exc)
                continue
            for r, last in zip(batch, lasts, strict=True):
                if not r.done.done():
                    r.done.set_result(int(last))
