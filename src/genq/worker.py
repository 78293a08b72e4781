"""The worker: claims jobs, enforces limits, runs them, and records how each one ended.

A *call* runs one job, or for a batched function several queued jobs at once. Per call:
a cancel scope (cancellation and shutdown), an optional execution timeout, one bound
Progress whose events go to every job of the call, and a JobLog per job. What happened
is decided per job, in ``_settle``: success, retry with backoff, failure, cancellation,
or (on shutdown past the grace period) back to the queue so no accepted work is lost.

Every write carries the job's ``Lease``. The maintenance loop renews the leases, and the
store's answer names jobs to stop: cancelled ones (the fallback when a cancel
notification from another machine was missed) and lost ones (reclaimed after the lease
lapsed, e.g. while this process was paused): those stop without writing anything more.
A run is known by its job id *and* lease token: a worker paused past its lease may claim
the same job again while its old, fenced-off run still unwinds, and the two must not
touch each other's bookkeeping.

A store outage stops no job: a running job's writes (events, artifacts, its outcome)
wait for the store however long it is away (``genq.patience``), until shutdown gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
import os
import random
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from genq.backoff import backoff_delay
from genq.encoding import NotSerializable, encode
from genq.errors import Cancelled, LeaseLost, OutputTooLarge, PermanentError, StoreUnavailable
from genq.executor import GeneratorOutcome, ThreadWatch, execute
from genq.functions import FunctionSpec
from genq.joblog import JobLog
from genq.jsoncodec import compact_json
from genq.loopwatch import Block, LoopWatch, function_codes
from genq.models import EventType, Job, JobStatus, OutputRef, WorkerInfo, json_size_bound
from genq.patience import Patience
from genq.progress import Progress
from genq.serving.host import ModelHost
from genq.store.base import Warmth

if TYPE_CHECKING:
    from genq.store.base import Store


class StopReason(enum.StrEnum):
    """Why a job is stopped before its function returns."""

    CANCELLED = "cancelled"  # its cancellation was requested
    SHUTDOWN = "shutdown"  # the worker is stopping and the grace period is over
    LOST = "lost"  # its lease lapsed and the store gave it to another worker


class OutcomeKind(enum.StrEnum):
    """How a call ended for one of its jobs: what ``_settle`` records."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    # A stopped job's outcome is its StopReason, by value:
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    LOST = "lost"
    STOPPED = "stopped"  # the whole call: each job's StopReason says why (_outcome_of)


@dataclass(slots=True)
class _Call:
    """One execution of a function: a single job, or a batch of jobs run together."""

    jobs: list[Job]
    scope: anyio.CancelScope
    progress: Progress
    stopped: dict[str, StopReason] = field(default_factory=dict)  # job id -> why
    thread: ThreadWatch = field(default_factory=ThreadWatch)  # a sync function's thread
    told_blocking: bool = False  # its jobs' logs say it blocked the loop

    def stop(self, job_id: str, reason: StopReason) -> None:
        """Stop one job; the call itself stops once none of its jobs still wants it."""
        self.stopped.setdefault(job_id, reason)
        if len(self.stopped) == len(self.jobs):
            self.progress.cancel(_STOP_MESSAGES[reason])
            self.scope.cancel()


_STOP_MESSAGES = {StopReason.CANCELLED: "job cancelled",
                  StopReason.SHUTDOWN: "worker shutting down",
                  StopReason.LOST: "lease lost: the job was given to another worker"}


RunKey = tuple[str, int]  # (job id, lease token): one run of a job by this worker


def _run_key(job: Job) -> RunKey:
    return job.id, job.lease_token


@dataclass(slots=True)
class _Outcome:
    kind: OutcomeKind
    value: Any = None
    error: BaseException | None = None


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
    """Schedule ``fn`` on ``loop`` from any thread; a closed loop has nobody to tell."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


log = logging.getLogger("genq.worker")


class FunctionStats:
    """Recent run times per function, as this process's worker recorded them: the engine
    estimates a full queue's Retry-After from them (``JobService.submit_policy``)."""

    def __init__(self) -> None:
        self._mean: dict[str, float] = {}

    def record(self, function: str, seconds: float) -> None:
        old = self._mean.get(function)
        self._mean[function] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def mean_duration(self, function: str) -> float | None:
        return self._mean.get(function)

SETTLE_AFTER_TURNS = 4  # loop turns a finished call waits before recording its outcome
BLOCK_REPORTED = 0.1  # seconds a function may keep the loop stuck before it is warned of


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(24):06x}"


class Worker:
    """Runs the jobs of ``functions`` from ``store``. ``concurrency`` overrides each
    function's own per-process limit; ``lease`` is how long a claim holds without renewal.

    A worker is one replica: it loads the models its functions take on ``device``
    (``ModelHost``) and claims a function's jobs only once they are loaded; it tears
    them down when it stops, after the jobs have been settled."""

    def __init__(self, functions: Mapping[str, FunctionSpec], store: Store, *,
                 stats: FunctionStats | None = None, worker_id: str | None = None,
                 concurrency: int | None = None, lease: float = 30.0,
                 on_loop_block: Callable[[Block], None] | None = None,
                 device: str = "cpu") -> None:
        self.store = store
        self.stats = stats
        self.id = worker_id or default_worker_id()
        self.device = device
        self._specs = dict(functions)
        self.host = ModelHost(self._specs, device, self._models_changed)
        self._warm_waits = {n: s.options.warm_wait for n, s in self._specs.items()
                            if s.keyed_model is not None}
        self._report_now = anyio.Event()  # set when the models' state changed
        self._slots = {n: concurrency or s.options.concurrency for n, s in self._specs.items()}
        self._limits = {n: s.options.max_running for n, s in self._specs.items()
                        if s.options.max_running is not None}
        self._lease = lease
        self._maintain_interval = min(1.0, lease / 3)
        self._started_at = time.time()
        self._running: Counter[str] = Counter()
        self._active: dict[RunKey, _Call] = {}  # (job id, lease token) -> its call
        self._patience = Patience(f"genq worker {self.id}")
        self._wake = asyncio.Event()  # cleared before each claim, set by _notify
        self._arrivals: set[anyio.Event] = set()  # batches waiting for more jobs
        self._stopping = False
        self._idle = anyio.Event()
        self._calls: set[asyncio.Task[None]] = set()
        self._threads = anyio.CapacityLimiter(max(4, sum(self._slots.values())))
        self._loop_watch = LoopWatch(function_codes({n: s.fn for n, s in self._specs.items()}))
        self._on_loop_block = on_loop_block
        self._warned_blocking: dict[str, float] = {}  # function -> when the log said so
        self._stuck: dict[str, float] = {}  # function -> seconds it kept the loop stuck

    @property
    def active_jobs(self) -> list[str]:
        return [job_id for job_id, _ in self._active]

    def running_by_function(self) -> dict[str, int]:
        return {name: n for name, n in self._running.items() if n}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and run jobs until ``stop``; returns once every job has been settled."""
        unsubscribe_work = self.store.subscribe_work(self._notify)
        unsubscribe_cancels = self.store.subscribe_cancels(self._on_cancel_requested)
        self._loop_watch.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._maintain)
                self.host.start(tg)  # loads run beside the claims of model-free functions
                task_status.started()
                await self._claim_loop(tg)
                await self._idle.wait()
                tg.cancel_scope.cancel()  # the maintenance loop, and loads still going
        finally:
            self._loop_watch.stop()
            unsubscribe_work()
            unsubscribe_cancels()
            await self._reap_calls()
            with anyio.CancelScope(shield=True):
                await self.host.close()  # after every job was settled: GPU memory freed

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # _run_call settles every job outcome itself; this is a bug or a store failure.
            log.error("genq worker %s: a call failed outside its job", self.id, exc_info=error)

    async def _reap_calls(self) -> None:
        """Cancel and await any call still running (only when run() itself is cancelled:
        stop() settles every call first), so no task outlives the worker."""
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        if calls:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*calls, return_exceptions=True)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let running jobs finish for ``grace`` s, then interrupt them.

        Interrupted jobs go back to the queue (their attempt is not counted) with a
        ``retrying`` event saying why, so a restart picks them up.
        """
        self._stopping = True
        self._notify()
        if not self._active:
            self._idle.set()
            return
        with anyio.move_on_after(grace):
            await self._idle.wait()
        self._patience.give_up()  # a store still down now: the leases will lapse instead
        for (job_id, _), call in list(self._active.items()):
            call.stop(job_id, StopReason.SHUTDOWN)
        await self._idle.wait()

    # -- claiming --------------------------------------------------------------------
    def _notify(self) -> None:
        self._wake.set()
        for arrival in self._arrivals:
            arrival.set()

    def _models_changed(self) -> None:
        """A load began, ended or failed, or a model was unloaded: claim what became
        ready, and tell the store now (readiness views, and where to route jobs)."""
        self._report_now.set()
        self._notify()

    async def _claim_loop(self, tg: anyio.abc.TaskGroup) -> None:
        while not self._stopping:
            self._wake.clear()  # rather than a new Event per claim; a set() after this wakes us
            # One round trip for every free slot: the queue is served from its head, and
            # this worker takes only what it can start now (no prefetch past capacity).
            # Only functions whose models are loaded (ModelHost.ready).
            wants = {n: slots - self._running[n] for n, slots in self._slots.items()
                     if self._running[n] < slots and self.host.ready(n)}
            try:
                jobs = (await self.store.claim_many(wants, self.id, self._lease, self._limits,
                                                    self._warmth()) if wants else [])
            except StoreUnavailable:
                # Redis is down for longer than the store retries: keep the worker alive
                # and claim again once it is back (the running jobs go on meanwhile).
                self._patience.unavailable()
                jobs = []
            if not jobs:
                with anyio.move_on_after(1.0):
                    await self._wake.wait()
                continue
            if self._idle.is_set():  # only ever set while stopping; else no new Event per job
                self._idle = anyio.Event()
            for job in jobs:
                self._fence_older_runs(job)
                self._running[job.function] += 1
                # A plain task rather than tg.start_soon (a third of the per-job overhead
                # in anyio); the worker still owns it: run() awaits every one first.
                task = asyncio.get_running_loop().create_task(self._run_call([job]))
                self._calls.add(task)
                task.add_done_callback(self._call_done)
        if not self._active:
            self._idle.set()

    def _warmth(self) -> Warmth | None:
        if not self._warm_waits:
            return None
        return Warmth(self.host.holds(), self._warm_waits)

    async def _maintain(self) -> None:
        """Renew leases, report this worker, and let the store expire and reclaim jobs.
        A store that fails (Redis restarting) is retried on the next round."""
        interval = self._maintain_interval
        try:
            while True:
                self._report_blocks()
                try:
                    await self._maintain_once()
                except StoreUnavailable:
                    self._patience.unavailable()  # leases are renewed once it is back
                except Exception:
                    log.warning("genq worker %s: store maintenance failed; retrying",
                                self.id, exc_info=True)
                else:
                    self._patience.answered()
                with anyio.move_on_after(interval):
                    await self._report_now.wait()
                self._report_now = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self.store.unregister_worker(self.id)

    async def _maintain_once(self) -> None:
        if self._active:
            leases: dict[str, int] = {}
            for job_id, token in self._active:  # the newest run of a job is the live one
                leases[job_id] = max(token, leases.get(job_id, token))
            report = await self.store.extend_leases(self.id, leases, self._lease)
            for job_id in report.lost:
                self._stop_job(job_id, StopReason.LOST)
            for job_id in report.cancelled:
                self._stop_job(job_id, StopReason.CANCELLED)
        # Three missed reports and the cluster view drops this worker.
        await self.store.register_worker(self.info(), ttl=3 * self._maintain_interval + 0.5)
        await self.store.housekeep(time.time())

    def _report_blocks(self) -> None:
        for block in self._loop_watch.take():
            self._report_block(block)

    def _report_block(self, block: Block) -> None:
        """A function kept the loop stuck: say so in the process log (once a minute per
        function), in the log of each job running it (once per call), and to metrics."""
        if self._on_loop_block is not None:
            self._on_loop_block(block)
        if block.function is None:
            if block.seconds >= BLOCK_REPORTED:
                log.debug("genq worker %s: the event loop was stuck for %.2f s outside "
                          "job functions (last at %s)", self.id, block.seconds, block.where)
            return
        # Many short stalls (one per token) add up: the total since start-up decides.
        self._stuck[block.function] = self._stuck.get(block.function, 0.0) + block.seconds
        total = self._stuck[block.function]
        if total < BLOCK_REPORTED:
            return
        message = (f"{block.function} has kept the event loop stuck for {total:.2f} s so "
                   f"far (last at {block.where}), stalling every stream and request of this "
                   "process: it is an async function calling blocking code. Make it a "
                   "plain def (generator), which genq runs in a thread, iterate the "
                   "blocking part with genq.iterate_in_thread(...), or register it with "
                   "@app.function(isolate=True) to run it on an event loop of its own "
                   "(meanwhile an async generator's blocking steps take turns with the rest "
                   "of the loop, at half speed).")
        now = time.monotonic()
        if now - self._warned_blocking.get(block.function, -math.inf) >= 60:
            self._warned_blocking[block.function] = now
            log.warning("genq worker %s: %s", self.id, message)
        for call in {id(c): c for c in self._active.values()}.values():
            if call.jobs[0].function == block.function and not call.told_blocking:
                call.told_blocking = True
                call.progress.log(message, "warning")

    def info(self) -> WorkerInfo:
        return WorkerInfo(self.id, socket.gethostname(), os.getpid(), tuple(self._specs),
                          sum(self._slots.values()), len(self._active), self._started_at,
                          time.time(), self.device, self.host.function_states(),
                          tuple(self.host.loaded_models()), self.host.holds())

    def _stop_job(self, job_id: str, reason: StopReason) -> None:
        """Stop every run of the job here (a cancel, or a lease renewal refused)."""
        for run, call in list(self._active.items()):
            if run[0] == job_id:
                call.stop(job_id, reason)

    def _stop_run(self, run: RunKey, reason: StopReason) -> None:
        call = self._active.get(run)
        if call is not None:
            call.stop(run[0], reason)

    def _fence_older_runs(self, job: Job) -> None:
        """A new claim of a job this worker still runs under an older token (it was
        paused past the lease): that run has lost the job, whatever it has yet heard."""
        for run in [r for r in self._active if r[0] == job.id and r[1] < job.lease_token]:
            self._stop_run(run, StopReason.LOST)

    def _on_cancel_requested(self, job_id: str) -> None:
        self._stop_job(job_id, StopReason.CANCELLED)

    async def _fill_batch(self, jobs: list[Job], spec: FunctionSpec) -> None:
        """Claim more queued jobs of a batched function, up to its size and wait."""
        size = spec.options.batch_size or 1
        deadline = time.monotonic() + spec.options.batch_wait
        while len(jobs) < size and not self._stopping:
            try:
                more = await self.store.claim([spec.name], self.id, self._lease, self._limits,
                                              self._warmth())
            except StoreUnavailable:
                return  # run the batch with what it has
            if more is not None:
                jobs.append(more)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            arrival = anyio.Event()
            self._arrivals.add(arrival)
            try:
                with anyio.move_on_after(remaining):
                    await arrival.wait()
            finally:
                self._arrivals.discard(arrival)

    # -- running one call ------------------------------------------------------------
    async def _run_call(self, jobs: list[Job]) -> None:
        spec = self._specs[jobs[0].function]
        if spec.options.batched:
            await self._fill_batch(jobs, spec)
        logs = {job.id: JobLog(self.store, job.id, job.lease,
                               functools.partial(self._stop_run, _run_key(job),
                                                 StopReason.LOST),
                               patience=self._patience)
                for job in jobs}

        def on_progress(state: dict[str, Any]) -> None:
            for log in logs.values():
                log.add(EventType.PROGRESS, state)

        def on_log(message: str, level: str) -> None:
            for log in logs.values():
                log.add(EventType.LOG, {"message": message, "level": level})

        progress = spec.progress_template.bind(asyncio.get_running_loop(), on_progress, on_log)
        call = _Call(jobs, anyio.CancelScope(), progress)
        for job in jobs:
            self._active[_run_key(job)] = call
            if job.cancel_requested:
                call.stop(job.id, StopReason.CANCELLED)
        started = time.monotonic()
        slot_freed = False

        def free_slot() -> None:
            # An abandoned sync call (cancel, timeout) keeps its function's slot until its
            # thread returns, so the next job cannot start beside it on the same GPU.
            nonlocal slot_freed
            if slot_freed:
                return
            slot_freed = True
            loop = asyncio.get_running_loop()
            if not call.thread.after_exit(
                    lambda: _call_soon(loop, self._release_slot, spec.name)):
                self._release_slot(spec.name)

        try:
            if len(call.stopped) == len(jobs):
                outcome = _Outcome(OutcomeKind.STOPPED)
            else:
                outcome = await self._execute(spec, call, logs)
            # The function is done with the slot: the next call may start while this
            # one's outcome is recorded (a batch's 32 finishes, a stream's last events).
            free_slot()
            self._report_blocks()  # while the job's log still takes a warning
            progress.close()
            with anyio.CancelScope(shield=True):
                # A few turns of the loop first, so the claim loop hands the freed slot
                # to the next job, and that call reaches its thread, before this call's
                # settling (a batch's 32 finishes) fills the loop: the model computes
                # the next batch while this one is recorded. (Each turn is microseconds.)
                for _ in range(SETTLE_AFTER_TURNS):
                    await anyio.lowlevel.checkpoint()
                outcomes = [_outcome_of(call, job, index, outcome, spec.options.batched)
                            for index, job in enumerate(jobs)]
                if len(jobs) == 1:
                    await self._settle(spec, jobs[0], outcomes[0], logs[jobs[0].id])
                else:  # a batch's jobs settle together: their writes share one commit
                    async with anyio.create_task_group() as settling:
                        for job, mine in zip(jobs, outcomes, strict=True):
                            settling.start_soon(self._settle, spec, job, mine, logs[job.id])
        finally:
            free_slot()
            for job in jobs:  # only this call's runs: a newer run of a job stays
                if self._active.get(_run_key(job)) is call:
                    del self._active[_run_key(job)]
            if self.stats is not None:
                self.stats.record(spec.name, time.monotonic() - started)
            if not self._active and self._stopping:
                self._idle.set()
            self._notify()

    def _release_slot(self, function: str) -> None:
        self._running[function] -= 1
        self._notify()

    async def _execute(self, spec: FunctionSpec, call: _Call,
                       logs: dict[str, JobLog]) -> _Outcome:
        first = call.jobs[0]

        async def emit(chunks: list[Any]) -> list[Any]:  # generators: never batched
            stored = [c if type(c) is str else await self._patience.until_stored(
                functools.partial(encode, c, self.store, first.id, "output"))
                for c in chunks]
            await logs[first.id].add_many([(EventType.OUTPUT, {"chunk": c}) for c in stored])
            return stored

        timeout = spec.options.timeout
        try:
            with call.scope:
                kwargs: dict[str, Any] = (spec.batch_kwargs([j.input for j in call.jobs])
                                          if spec.options.batched
                                          else spec.call_kwargs(first.input))

                def loading(label: str) -> None:
                    call.progress(None, desc=f"loading model {label}")

                async def run() -> _Outcome:
                    async with self.host.inject(spec, kwargs, loading) as full:
                        value = await execute(spec, full, progress=call.progress, emit=emit,
                                              limiter=self._threads, watch=call.thread)
                    if spec.options.batched:
                        _check_batch_result(spec.name, value, len(call.jobs))
                    return _Outcome(OutcomeKind.SUCCEEDED, value)

                if timeout is None:  # no timer: one cancel scope fewer per call
                    return await run()
                with anyio.move_on_after(timeout) as timer:
                    return await run()
                call.progress.cancel("timed out")
                if timer.cancelled_caught:
                    return _Outcome(OutcomeKind.TIMEOUT)
        except Cancelled:
            pass
        except Exception as exc:
            return _Outcome(OutcomeKind.FAILED, error=exc)
        return _Outcome(OutcomeKind.STOPPED)

    async def _settle(self, spec: FunctionSpec, job: Job, outcome: _Outcome,
                      joblog: JobLog) -> Job | None:
        """Record how the run ended, waiting for the store if it is away; returns the job
        as stored afterwards, or None when nothing could be written (the lease was lost,
        or the store is still down when shutdown gives up)."""
        try:
            try:
                await joblog.drain()
            except LeaseLost:
                pass  # met again below, by the write of the outcome
            except StoreUnavailable:
                raise  # shutdown gave up with events unwritten: no outcome over a hole
            except Exception:
                log.exception("genq worker %s: events of job %s could not be written",
                              self.id, job.id)
            if outcome.kind is OutcomeKind.LOST:
                raise LeaseLost(f"job {job.id} was reclaimed", job_id=job.id)
            return await self._patience.until_stored(
                functools.partial(self._record, spec, job, outcome))
        except LeaseLost:
            log_lost(self.id, job)
        except StoreUnavailable:
            log.warning("genq worker %s: shut down before the store came back, so job %s "
                        "(attempt %d) ended unrecorded; it runs again once its lease "
                        "lapses", self.id, job.id, job.attempts)
        return None

    async def _record(self, spec: FunctionSpec, job: Job, outcome: _Outcome) -> Job:
        store, lease = self.store, job.lease
        if outcome.kind is OutcomeKind.SUCCEEDED:
            value = outcome.value
            if isinstance(value, GeneratorOutcome):
                value = value.result(job.id, job.last_event_id)
            try:
                result = await encode(value, store, job.id, "result")
                _check_result_size(spec, result)
            except (NotSerializable, OutputTooLarge) as exc:
                outcome = _Outcome(OutcomeKind.FAILED, error=exc)
            else:
                return await store.finish(job.id, JobStatus.SUCCEEDED, result=result,
                                          lease=lease)
        if outcome.kind is OutcomeKind.SHUTDOWN:
            return await store.requeue(job.id, "worker shut down before the job finished",
                                       lease)
        if outcome.kind is OutcomeKind.CANCELLED:
            return await store.finish(job.id, JobStatus.CANCELLED, data={"reason": "cancelled"},
                                      lease=lease)
        if outcome.kind is OutcomeKind.TIMEOUT:
            error = {"type": "Timeout", "message":
                     f"the job exceeded its timeout of {spec.options.timeout} s"}
            retryable = any(issubclass(TimeoutError, t) for t in spec.options.retry_on)
        else:
            failure = outcome.error
            assert failure is not None
            error = {"type": type(failure).__name__, "message": str(failure),
                     "traceback": "".join(traceback.format_exception(failure))}
            retryable = (isinstance(failure, spec.options.retry_on)
                         and not isinstance(failure, PermanentError))
        if retryable and job.attempts < job.max_attempts:
            delay = backoff_delay(job.attempts - 1, spec.options.retry_backoff,
                                  spec.options.retry_backoff_max)
            return await store.retry(job.id, delay, error, lease)
        return await store.finish(job.id, JobStatus.FAILED, error=error, lease=lease)


def log_lost(worker_id: str, job: Job) -> None:
    log.warning("genq worker %s: lost job %s (attempt %d) - its lease lapsed and the job "
                "was reclaimed, so this run's remaining writes were refused", worker_id,
                job.id, job.attempts)


def _check_result_size(spec: FunctionSpec, result: Any) -> None:
    """A returned result counts against ``max_output_bytes`` (a streamed job's output was
    measured as it went: its result is what it streamed, or a reference to it)."""
    bound = json_size_bound(result)
    if bound is not None and bound <= spec.options.max_output_bytes:
        return  # text or a vector of floats that cannot be over
    if OutputRef.from_dict(result) is not None:
        return
    limit = spec.options.max_output_bytes
    size = len(compact_json(result))
    if size > limit:
        raise OutputTooLarge(
            f"the result of {spec.name!r} is {size:,} bytes of JSON, over max_output_bytes "
            f"= {limit:,} bytes (raise the limit with @app.function(max_output_bytes=...))",
            option="max_output_bytes", limit=limit)


def _check_batch_result(function: str, value: Any, expected: int) -> None:
    if not isinstance(value, list | tuple) or len(value) != expected:
        got = f"{len(value)} results" if isinstance(value, list | tuple) else type(value).__name__
        raise TypeError(f"batched function {function!r} must return a list with one result "
                        f"per input: got {got} for {expected} inputs")


def _outcome_of(call: _Call, job: Job, index: int, outcome: _Outcome,
                batched: bool) -> _Outcome:
    """How the call ended for one of its jobs."""
    if job.id in call.stopped or outcome.kind is OutcomeKind.STOPPED:
        return _Outcome(OutcomeKind(call.stopped.get(job.id, StopReason.CANCELLED)))
    if outcome.kind is OutcomeKind.SUCCEEDED and batched:
        return _Outcome(OutcomeKind.SUCCEEDED, outcome.value[index])
    return outcome
