"""The engine: one store, optionally a worker, and the job service every front end uses.

``JobService`` is the one place where a caller's identity meets the store: the HTTP API
(one owner per API key) and ``app.local()`` (one owner per client) both go through it, so
"another owner's job does not exist for you" is decided once. It also builds each
submission's policy, with a Retry-After estimated from the run times this process's
worker recorded (``FunctionStats``), and the owner's quotas when the caller has any
(``Quota``: ``max_queued`` in the policy, ``max_running`` on the job). ``Engine`` gives
the store and the worker one life cycle: open, run, drain, close; and ``Engine.cluster``
is the whole cluster as the store sees it, for health checks, metrics and the dashboard.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio
from anyio.abc import TaskStatus

from genq.app import App
from genq.errors import InvalidInput, JobNotFound, NoResult
from genq.jsoncodec import compact_json
from genq.loopwatch import Block
from genq.models import (
    ArtifactRef,
    Event,
    EventType,
    Job,
    JobStatus,
    OutputRef,
    WorkerInfo,
    new_job_id,
)
from genq.readiness import Readiness
from genq.store.base import PAGE_BYTES, Quota, Store, SubmitPolicy, Submitted
from genq.worker import FunctionStats, Worker, default_worker_id

MAX_RESULT_WAIT = 60.0  # seconds one long-poll for a result may hold its caller
# Priorities a submission may ask for: a 32-bit range, well inside what SQLite's INTEGER
# and Redis's sorted-set scores (doubles) hold exactly. Larger ones stopped SQLite's
# writer thread (OverflowError), which took the whole store down.
PRIORITY_MIN, PRIORITY_MAX = -(1 << 31), (1 << 31) - 1


class JobService:
    """Submit, read, follow and cancel jobs on behalf of an owner."""

    def __init__(self, app: App, store: Store, stats: FunctionStats | None = None) -> None:
        self.app = app
        self.store = store
        self.stats = FunctionStats() if stats is None else stats
        # Which functions a live worker is ready for, read from the store (cached briefly).
        self.readiness = Readiness(app.functions, store.workers)

    async def submit(self, owner: str, function: str, inputs: dict[str, Any], *,
                     priority: int | None = None, idempotency_key: str | None = None,
                     quota: Quota | None = None) -> Submitted:
        """Validate and store a job; raises UnknownFunction, InvalidInput, QueueFull,
        OwnerQuota (over ``quota.max_queued``)... The job carries ``quota.max_running``
        to every claim (``Job.owner_max_running``)."""
        if priority is not None and not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            message = f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}"
            raise InvalidInput(f"invalid submission for {function!r}: {message}",
                               function=function, errors=[{
                                   "field": "priority", "message": message,
                                   "type": "priority_range"}])
        job = self.app.new_job(function, inputs, owner=owner, priority=priority,
                               idempotency_key=idempotency_key)
        # This submission's hold on the job it gets, new or joined (de-duplication):
        # ``cancel(..., ticket=)`` lets go of it alone (Store.cancel).
        job.ticket = submission_ticket(owner, idempotency_key)
        policy = self.submit_policy(function)
        if quota is not None:
            job.owner_max_running = quota.max_running
            policy = replace(policy, owner_max_queued=quota.max_queued)
        return await self.store.create_job(job, policy)

    def submit_policy(self, function: str) -> SubmitPolicy:
        """The function's policy, whose Retry-After (for QueueFull) is, once this
        process's worker has run it, its mean run time over its concurrency."""
        spec = self.app.get_function(function)
        policy = spec.submit_policy()
        mean = self.stats.mean_duration(function)
        if mean is None:
            return policy
        retry_after = max(1, math.ceil(mean / spec.options.concurrency))
        return replace(policy, retry_after=retry_after)

    async def get(self, owner: str, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        if job is None or job.owner != owner:  # another owner's job does not exist for you
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        return job

    async def list_jobs(self, owner: str, *, function: str | None = None,
                   status: JobStatus | None = None, limit: int = 50,
                   before: float | None = None, before_id: str | None = None) -> list[Job]:
        """Newest first; ``before``/``before_id`` page as ``Store.list_jobs`` says."""
        return await self.store.list_jobs(owner=owner, function=function, status=status,
                                          limit=limit, before=before, before_id=before_id)

    async def queue_position(self, job: Job) -> int | None:
        return (await self.store.queue_position(job.id)
                if job.status is JobStatus.QUEUED else None)

    async def waiting(self, job: Job) -> dict[str, Any] | None:
        """Why a queued job waits though a worker could take it (genq.readiness); None
        for a job not queued, or queued only behind others."""
        return (await self.readiness.waiting(job.function)
                if job.status is JobStatus.QUEUED else None)

    async def read_events(self, owner: str, job_id: str, after: int = 0,
                          limit: int = 1000) -> list[Event]:
        await self.get(owner, job_id)
        return await self.store.read_events(job_id, after, limit)

    async def follow(self, owner: str, job_id: str,
                     after: int = 0) -> AsyncIterator[list[Event]]:
        """Batches of the job's events after ``after``, live, ending after the terminal."""
        await self.get(owner, job_id)
        async for batch in self.store.follow(job_id, after):
            yield batch

    async def wait(self, owner: str, job_id: str, timeout: float | None = None) -> Job:
        """The job once terminal; raises ResultTimeout after ``timeout`` seconds."""
        await self.get(owner, job_id)
        return await self.store.wait_terminal(job_id, timeout)

    async def settled(self, owner: str, job_id: str, wait: float) -> Job:
        """The job, terminal if it becomes so within ``wait`` seconds (at most
        MAX_RESULT_WAIT). A terminal job is answered only once its end is durable, so a
        log read right after holds the terminal event too."""
        job = await self.get(owner, job_id)
        if job.status.terminal:
            return await self.store.wait_terminal(job_id)
        if wait > 0 and math.isfinite(wait):
            with anyio.move_on_after(min(wait, MAX_RESULT_WAIT)):
                job = await self.store.wait_terminal(job_id)
        return job

    async def cancel(self, owner: str, job_id: str, ticket: str | None = None) -> Job:
        """Cancel the job; with a submission's ``ticket``, only that submission lets go,
        and the job is cancelled once no submission holds it (Store.cancel)."""
        await self.get(owner, job_id)
        return await self.store.cancel(job_id, ticket=ticket)

    async def result_value(self, owner: str, job_id: str) -> Any:
        """The whole result of a succeeded job (however large: a streamed job's large
        output is read from its log, a page at a time); raises NoResult otherwise."""
        result = await self._result_of(owner, job_id)
        ref = OutputRef.from_dict(result)
        if ref is None:
            return result
        chunks = [chunk async for page in self._output_pages(ref) for chunk in page]
        return "".join(chunks) if ref.text else chunks

    async def result_json(self, owner: str, job_id: str) -> AsyncIterator[bytes]:
        """The result of a succeeded job as JSON, in pieces of about PAGE_BYTES (raises
        NoResult or JobNotFound here, before the first piece)."""
        result = await self._result_of(owner, job_id)
        ref = OutputRef.from_dict(result)
        return _json_pieces(result) if ref is None else self._output_json(ref)

    async def _result_of(self, owner: str, job_id: str) -> Any:
        job = await self.get(owner, job_id)
        if job.status is not JobStatus.SUCCEEDED:
            raise NoResult(f"job {job_id} has no result: it is {job.status.value}",
                           job_id=job_id, status=job.status.value)
        return job.result

    async def _output_json(self, ref: OutputRef) -> AsyncIterator[bytes]:
        """A streamed result as JSON: one string of the joined text, or a list."""
        yield b'"' if ref.text else b"["
        first = True
        async for page in self._output_pages(ref):
            if ref.text:  # each chunk's JSON without its quotes: one string in all
                piece = "".join([compact_json(chunk)[1:-1] for chunk in page])
            else:
                piece = ("" if first else ",") + ",".join(map(compact_json, page))
            first = False
            yield piece.encode()
        yield b'"' if ref.text else b"]"

    async def _output_pages(self, ref: OutputRef) -> AsyncIterator[list[Any]]:
        """The output chunks ``ref`` names, a page of the log at a time."""
        after, seen = ref.after, 0
        while True:
            events = await self.store.read_events(ref.job_id, after)
            if not events:
                break
            page = [e.data["chunk"] for e in events if e.type is EventType.OUTPUT]
            if page:
                seen += len(page)
                yield page
            after = events[-1].id
            if events[-1].terminal:
                break
        if seen != ref.chunks:
            raise NoResult(f"the output of job {ref.job_id} this result is read from is "
                           "gone (deleted after its retention period)", job_id=ref.job_id)

    async def artifact(self, owner: str, artifact_id: str) -> tuple[ArtifactRef, bytes]:
        found = await self.store.get_artifact(artifact_id)
        job = None if found is None else await self.store.get_job(found[0].job_id)
        if found is None or job is None or job.owner != owner:
            raise JobNotFound(f"no artifact {artifact_id}", artifact_id=artifact_id)
        return found


def submission_ticket(owner: str, idempotency_key: str | None) -> str:
    """A submission's ticket: random, or, with an idempotency key, derived from it, so a
    retried submission that joins a job (its first answer lost) is the same holder, not
    a second one that nobody would ever let go of."""
    if idempotency_key is None:
        return new_job_id()
    return hashlib.sha256(f"ticket\n{owner}\n{idempotency_key}".encode()).hexdigest()[:32]


async def _json_pieces(value: Any) -> AsyncIterator[bytes]:
    """A result held whole (a function's return value) as JSON, in pieces."""
    text = compact_json(value).encode()
    for start in range(0, len(text), PAGE_BYTES):
        yield text[start:start + PAGE_BYTES]


@dataclass(frozen=True, slots=True)
class Cluster:
    """The whole cluster as the store sees it: every worker on any machine."""

    workers: list[WorkerInfo]  # the workers reporting to the store
    running: dict[str, int]  # function -> jobs running on any worker (absent: none)
    queue_depths: dict[str, int]  # function -> queued jobs, per registered function


class Engine:
    """Store + optional workers with one life cycle: ``serve`` runs until ``stop``.

    ``functions`` limits the workers to some of the app's functions and ``concurrency``
    overrides their per-process limits (``genq worker --functions --concurrency``).
    ``devices`` runs one worker replica per entry, each loading its own models on its
    device (``genq worker --devices cuda:0,cuda:1``; genq.serving.devices).
    """

    def __init__(self, app: App, store: Store, *, workers: bool = True,
                 functions: Sequence[str] | None = None, concurrency: int | None = None,
                 lease: float = 30.0, shutdown_grace: float = 10.0,
                 on_loop_block: Callable[[Block], None] | None = None,
                 devices: Sequence[str] = ("cpu",)) -> None:
        self.app = app
        self.store = store
        self.stats = FunctionStats()  # recorded by the workers, read by the job service
        self.jobs = JobService(app, store, self.stats)
        self.workers: list[Worker] = []
        if workers:
            names = list(app.functions) if functions is None else list(functions)
            specs = {name: app.get_function(name) for name in names}
            base = default_worker_id()
            for index, device in enumerate(devices):
                worker_id = base if len(devices) == 1 else f"{base}/{index}-{device}"
                self.workers.append(Worker(
                    specs, store, stats=self.stats, concurrency=concurrency, lease=lease,
                    on_loop_block=on_loop_block, device=device, worker_id=worker_id))
        self.shutdown_grace = shutdown_grace
        self._stop = anyio.Event()
        self._stopped = anyio.Event()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.store.open()
            try:
                async with anyio.create_task_group() as tg:
                    for worker in self.workers:
                        await tg.start(worker.run)
                    task_status.started()
                    await self._stop.wait()
                    async with anyio.create_task_group() as stopping:  # one grace for all
                        for worker in self.workers:
                            stopping.start_soon(worker.stop, self.shutdown_grace)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.store.close()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    async def cluster(self, *, queue_depths: bool = True) -> Cluster:
        """What ``/readyz``, ``/metrics`` and ``/api/stats`` report, read from the store
        (so any front end reports the whole cluster). ``queue_depths=False`` skips one
        read per function and leaves ``Cluster.queue_depths`` empty."""
        running = await self.store.running_counts()
        depths = ({name: await self.store.queue_depth(name) for name in self.app.functions}
                  if queue_depths else {})
        return Cluster(await self.store.workers(), running, depths)
