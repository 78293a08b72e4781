"""No-op jobs per second on Redis with 1, 2 and 4 worker processes: genq's Redis store
against arq and SAQ on the same private redis-server, measured the same way, interleaved
round after round, with ratios of medians:

    .venv/bin/pip install -e '.[bench]'                  # arq and saq
    .venv/bin/python bench/bench_redis_jobs.py --preload # the workers alone (the headline)
    .venv/bin/python bench/bench_redis_jobs.py           # enqueue inside the timed window
    .venv/bin/python bench/bench_redis_jobs.py --quick   # N=1,000 at K=1,2: a smoke test

    res = run_peer("arq", url, n=5_000, processes=2)     # one measurement -> dict, below

One measurement (``run_peer``) runs in a fresh child process (``_harness.run_child``), which:

1. refuses port 6379 (the machine's shared Redis) and FLUSHDBs the given server;
2. starts K worker processes (``--child arq-worker|saq-worker``), each the library's own
   worker with 64 concurrent jobs, against the empty queue, and waits until each one has
   set ``bench:ready:<i>`` from its startup hook (SAQ also: until all K*64 of its BLMOVEs
   are blocked), so interpreter start-up and connecting are not timed;
3. enqueues N no-op jobs with 20 enqueues in flight (SAQ's default ``max_concurrent_ops``;
   arq has no batch enqueue, so both use one ``enqueue`` call per job) and times from the
   first enqueue to the moment no job is left unfinished: the enqueue is inside the timed
   window and competes with the workers for the CPUs. With ``preload=True`` the startup
   hooks instead wait (BLPOP ``bench:go:<i>``) before the library starts dequeueing; the
   N jobs are enqueued untimed, and the clock runs from the go to the last completion:
   the workers alone;
4. polls, every 10 ms, the library's own set of *unfinished* jobs, which a job leaves only
   in the transaction that stores its outcome (arq: the ``arq:queue`` sorted set, which
   keeps a job until it is finished, not just until it is picked; SAQ:
   ``count("incomplete")``). A job that is merely dequeued, running or retried still counts;
5. then checks, from Redis, that exactly N results exist and are successful with value None,
   stops the workers (SIGTERM, wait; SIGKILL after 15 s; PR_SET_PDEATHSIG makes them die
   with this child even if it is killed) and checks that their own counters add up to N
   completed, 0 failed, 0 retried.

What one "job" is, for each system (a no-op ``async def`` that returns None):

* genq: ``submit("noop")`` from ``app.local(url, workers=False)`` (the SUBMIT script:
  the job hash, its ``queued`` event in the job's Stream, the queue sorted set, PUBLISH
  work and the dashboards' feed). Each worker process opens a ``RedisStore`` and runs a
  ``genq.worker.Worker`` (what ``genq worker`` runs) with ``concurrency=64``: the CLAIM
  script (ZRANGE + ZREM, the job hash, the ``started`` event, the fencing token), the
  call, then the FINISH script (the terminal event and state, PUBLISH the feed), with
  lease renewals and housekeeping once a second. Unfinished: the function's ready and
  delayed sorted sets plus its running count (a job leaves them only in the script that
  records its end); the check after the run reads every job hash: N ``succeeded``, one
  attempt each, 3 events each.
* arq 0.28: ``ArqRedis.enqueue_job("noop")`` (WATCH, EXISTS, MULTI PSETEX job + ZADD queue
  EXEC: a pickled job under ``arq:job:<id>``, its id in the ``arq:queue`` sorted set). A
  ``Worker(max_jobs=64)`` polls the sorted set (ZRANGEBYSCORE, up to ``queue_read_limit`` =
  320 ids), claims each job with a WATCH/MULTI on ``arq:in-progress:<id>``, reads it, runs
  it, and in one MULTI stores the pickled result under ``arq:result:<id>`` for
  ``keep_result`` = 3600 s (the default), deletes the job keys and ZREMs it from the queue.
* SAQ 0.26: ``Queue.enqueue("noop")`` (one Lua script: SET the JSON job under
  ``saq:job:default:<key>``, ZADD ``incomplete``, RPUSH ``queued``). A
  ``Worker(concurrency=64)`` runs 64 loops, each BLMOVE ``queued`` -> ``active`` (blocking,
  no polling), GET the job, SET it ACTIVE + PUBLISH, run it, then in one MULTI LREM
  ``active``, ZREM ``incomplete`` and SETEX the job record (status ``complete``, result
  null) for the job's ``ttl`` = 600 s (the default), then PUBLISH.

Settings changed from each library's defaults, and why (everything else is the default):

* concurrency: arq ``max_jobs`` 10 -> 64, SAQ ``concurrency`` 10 -> 64 per process, the same
  for both and the same as genq's ``concurrency=64`` in bench_jobs.py.
* arq ``poll_delay`` 0.5 s -> 0.01 s (a documented ``Worker`` parameter): arq sleeps up to
  ``poll_delay`` between reads of the queue. With a backlog a read keeps the worker busy
  for longer than that, so it matters mainly when the queue runs dry (the start and the
  last batch). SAQ needs no such setting: its dequeue blocks in BLMOVE.
* SAQ's sweep is held off for the measurement (its lock key is set after the FLUSHDB; see
  ``measure_child``): the sweep can abort a job that was dequeued but not yet marked
  active, a known SAQ race; it costs nothing measurable once a minute.
* Logging is left unconfigured in the workers, as for any library: warnings and errors
  only. (arq's ``arq`` CLI would log two INFO lines per job to stdout; SAQ's CLI logs
  warnings.) Both still build their per-job log arguments, as they do in production.
* Enqueue concurrency 20 for both: SAQ's default ``max_concurrent_ops``; for arq, a
  semaphore of the same size around ``enqueue_job`` (it has no limit of its own).

The result dict (JSON-able): ``peer``, ``n``, ``processes``, ``preload``, ``seconds`` (the
timed window), ``jobs_per_s`` (n / seconds), ``jobs_per_s_per_process``, ``enqueue_s``
(first to last enqueue: inside ``seconds`` unless preloaded), ``ready_s`` (worker start-up,
never timed), ``per_process`` (jobs each worker completed, by its own counter) and
``cpu_us_per_job``: CPU per job of the ``workers`` (all K, from their ready point, or the
go, to their exit: a little more than the timed window), of the ``producer`` (this child:
enqueue and polling) and of ``redis-server`` (its INFO cpu) in the timed window. On a
2-core machine, their sum against 2 x ``seconds`` shows whether a run was CPU-bound.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

PEERS = ("genq", "arq", "saq")
CONCURRENCY = 64  # jobs at a time per worker process: arq max_jobs, SAQ concurrency
ARQ_POLL_DELAY = 0.01  # s; arq sleeps its default 0.5 s whenever the queue runs dry
ENQUEUE_IN_FLIGHT = 20  # SAQ's default max_concurrent_ops, and the same bound for arq
COMPLETION_POLL = 0.01  # s between ZCARDs: ~200 us CPU each here, so not much more often
READY_TIMEOUT = 30.0  # seconds for K workers to import, connect and signal
READY_KEY = "bench:ready:{}"
GO_KEY = "bench:go:{}"  # preload only: a worker's startup hook waits for this list
SCRIPT = str(Path(__file__).resolve())


async def noop(ctx: Any) -> None:
    """The job, for both peers (each passes its context dict as the only argument)."""
    return None


# -- worker processes ------------------------------------------------------------------
async def _signal_ready(redis: Any, index: int, gate: bool) -> float:
    """From a worker's startup hook: set its ready key; with ``gate`` (preload) wait there,
    before the library starts dequeueing, for the coordinator's go. Returns the CPU time
    from which the worker's work is counted."""
    await redis.set(READY_KEY.format(index), os.getpid())
    if gate:
        await redis.blpop([GO_KEY.format(index)], timeout=0)
    return time.process_time()


def _genq_app(calls: list[int] | None = None) -> Any:
    """The bench app; ``calls[0]`` counts the no-op's runs in this process."""
    import genq

    app = genq.App("bench")

    @app.function(name="noop", concurrency=CONCURRENCY)
    async def genq_noop() -> None:
        if calls is not None:
            calls[0] += 1

    return app


def genq_worker_child(args: list[str]) -> h.ChildResult:
    """One genq worker process, as ``genq worker`` runs it, until SIGTERM."""
    import anyio
    import redis.asyncio as aioredis

    from genq.store.redis import RedisStore
    from genq.worker import FunctionStats, Worker

    url, index, gate = args[0], int(args[1]), args[2] == "gate"
    calls = [0]
    app = _genq_app(calls)

    async def main() -> h.ChildResult:
        store = RedisStore(url)
        await store.open()
        async with aioredis.Redis.from_url(url) as redis:
            cpu0 = await _signal_ready(redis, index, gate)
        worker = Worker(app.functions, store, stats=FunctionStats())  # as the engine gives it
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                await worker.stop(5.0)
        finally:
            await store.close()
        # Runs, not completions: the check in Redis proves each job ran once and succeeded.
        return {"complete": calls[0], "failed": 0, "retried": 0,
                "cpu_s": time.process_time() - cpu0}

    return anyio.run(main)


def arq_worker_child(args: list[str]) -> h.ChildResult:
    """One arq worker process, ``run`` until SIGTERM; returns its own job counters."""
    from arq.connections import RedisSettings
    from arq.worker import Worker

    url, index, gate = args[0], int(args[1]), args[2] == "gate"
    cpu0 = [0.0]

    async def on_startup(ctx: dict[str, Any]) -> None:  # runs before the first poll
        cpu0[0] = await _signal_ready(ctx["redis"], index, gate)

    asyncio.set_event_loop(asyncio.new_event_loop())  # Worker() takes the current loop
    worker = Worker(functions=[noop], redis_settings=RedisSettings.from_dsn(url),
                    max_jobs=CONCURRENCY, poll_delay=ARQ_POLL_DELAY, on_startup=on_startup)
    worker.run()  # arq's own SIGTERM handler cancels it, then it closes its pool
    return {"complete": worker.jobs_complete, "failed": worker.jobs_failed,
            "retried": worker.jobs_retried, "cpu_s": time.process_time() - cpu0[0]}


def saq_worker_child(args: list[str]) -> h.ChildResult:
    """One SAQ worker process, as ``saq.worker.start`` runs it (connect, start, disconnect)
    until SIGTERM; returns its own job counters."""
    from saq import Queue, Worker

    url, index, gate = args[0], int(args[1]), args[2] == "gate"
    cpu0 = [0.0]

    async def startup(ctx: dict[str, Any]) -> None:  # runs before the 64 dequeue loops start
        cpu0[0] = await _signal_ready(ctx["worker"].queue.redis, index, gate)

    async def main() -> h.ChildResult:
        queue = Queue.from_url(url)
        worker = Worker(queue, functions=[noop], concurrency=CONCURRENCY, startup=startup)
        try:
            await queue.connect()
            await worker.start()  # returns on SIGTERM (SAQ's own handler)
        finally:
            await queue.disconnect()
        return {"complete": queue.complete, "failed": queue.failed, "retried": queue.retried,
                "cpu_s": time.process_time() - cpu0[0]}

    return asyncio.run(main())


# -- the measurement (one child process per call) --------------------------------------
class Workers:
    """K worker processes of one peer; ``stop`` SIGTERMs them all, then reaps them."""

    def __init__(self, peer: str, url: str, preload: bool) -> None:
        self.peer, self.url, self.preload = peer, url, preload
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []

    def start(self, count: int) -> None:
        prctl = ctypes.CDLL(None).prctl  # looked up before fork, called in the child

        def die_with_parent() -> None:
            # SIGTERM the worker when this process dies, even by SIGKILL (run_child's
            # timeout), so that no worker is ever left behind. 1 = PR_SET_PDEATHSIG (Linux).
            prctl(1, signal.SIGTERM)

        for i in range(count):
            log = tempfile.TemporaryFile("w+")  # stderr: a file, so it can never block
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, SCRIPT, "--child", f"{self.peer}-worker", self.url, str(i),
                 "gate" if self.preload else "run"],
                stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=die_with_parent))

    def check_alive(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                raise RuntimeError(f"worker {i} exited early (exit {proc.returncode}):\n"
                                   f"{self.stderr(i)}")

    def stderr(self, i: int) -> str:
        self.logs[i].seek(0)
        return self.logs[i].read()[-3000:]

    def stop(self) -> list[h.ChildResult]:
        """SIGTERM all, wait (SIGKILL after 15 s); the counters of those that exited 0."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        results: list[h.ChildResult] = []
        for i, proc in enumerate(self.procs):
            try:
                out, _ = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            if proc.returncode == 0 and out.strip():
                results.append(json.loads(out.strip().splitlines()[-1]))
            else:
                results.append({"exit": proc.returncode, "stderr": self.stderr(i)})
            self.logs[i].close()
        return results


async def _wait_ready(redis: Any, workers: Workers, blocked: int) -> None:
    """Until every worker has set its ready key and, if ``blocked``, that many clients are
    blocked in Redis (SAQ's idle BLMOVEs, or the preload gates' BLPOPs)."""
    keys = [READY_KEY.format(i) for i in range(len(workers.procs))]
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        workers.check_alive()
        if await redis.exists(*keys) == len(keys) and (
                not blocked or (await redis.info("clients"))["blocked_clients"] >= blocked):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {READY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.01)


async def _enqueue_all(enqueue: Callable[[], Awaitable[object]], n: int) -> None:
    sem = asyncio.Semaphore(ENQUEUE_IN_FLIGHT)

    async def one() -> None:
        async with sem:
            if await enqueue() is None:  # both return None for a duplicate job id
                raise RuntimeError("a job was not enqueued")

    await asyncio.gather(*(one() for _ in range(n)))


async def _redis_cpu(redis: Any) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"] + info["used_cpu_sys"])


async def _time_run(redis: Any, workers: Workers, idle_blocked: int,
                    enqueue: Callable[[], Awaitable[object]],
                    unfinished: Callable[[], Awaitable[int]], n: int) -> dict[str, float]:
    """Wait until the workers are ready, enqueue N jobs, wait until none is unfinished.
    Returns the seconds from the first enqueue (preload: from the go), the seconds spent
    enqueueing, and the CPU this process and redis-server used in the timed part."""
    t0 = h.now()
    await _wait_ready(redis, workers, len(workers.procs) if workers.preload else idle_blocked)
    ready = h.now() - t0
    enqueued = 0.0
    if workers.preload:  # enqueue untimed, then release the gated workers
        t0 = h.now()
        await _enqueue_all(enqueue, n)
        enqueued = h.now() - t0
    redis_cpu0, cpu0 = await _redis_cpu(redis), time.process_time()
    t0 = h.now()
    if workers.preload:
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(len(workers.procs)):
                pipe.rpush(GO_KEY.format(i), 1)
            await pipe.execute()
    else:
        await _enqueue_all(enqueue, n)
        enqueued = h.now() - t0
    while True:  # polling is all either library offers for "all done"
        if await unfinished() == 0:
            seconds = h.now() - t0
            break
        workers.check_alive()  # a dead worker's claimed jobs would never finish
        await asyncio.sleep(COMPLETION_POLL)
    return {"seconds": seconds, "enqueue_s": enqueued, "ready_s": ready,
            "producer_cpu_s": time.process_time() - cpu0,
            "redis_cpu_s": await _redis_cpu(redis) - redis_cpu0}


async def _measure_arq(url: str, n: int, workers: Workers) -> dict[str, float]:
    from arq.connections import RedisSettings, create_pool
    from arq.constants import default_queue_name, job_key_prefix, result_key_prefix
    from arq.jobs import deserialize_result

    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        timing = await _time_run(pool, workers, 0, lambda: pool.enqueue_job("noop"),
                                 lambda: pool.zcard(default_queue_name), n)
        # Every job has a successful result, and no job key is left behind.
        keys = [k async for k in pool.scan_iter(match=result_key_prefix + "*", count=1000)]
        ok = 0
        for i in range(0, len(keys), 1000):
            for raw in await pool.mget(keys[i:i + 1000]):
                res = deserialize_result(raw)
                ok += res.success and res.result is None and res.function == "noop"
        left = [k async for k in pool.scan_iter(match=job_key_prefix + "*", count=1000)]
        if len(keys) != n or ok != n or left:
            raise RuntimeError(f"arq: {len(keys)} results, {ok} successful, {len(left)} jobs "
                               f"left; expected {n} successful results")
    finally:
        await pool.aclose(close_connection_pool=True)
    return timing


async def _measure_saq(url: str, n: int, workers: Workers) -> dict[str, float]:
    from saq import Status
    from saq.queue.redis import RedisQueue

    queue = RedisQueue.from_url(url, max_concurrent_ops=ENQUEUE_IN_FLIGHT)
    await queue.connect()
    try:
        timing = await _time_run(queue.redis, workers, len(workers.procs) * CONCURRENCY,
                                 lambda: queue.enqueue("noop"),
                                 lambda: queue.count("incomplete"), n)
        # Every job record is there, complete, with a None result.
        statuses: dict[str, int] = {}
        ok = 0
        async for job in queue.iter_jobs(batch_size=1000):
            statuses[job.status] = statuses.get(job.status, 0) + 1
            ok += job.status == Status.COMPLETE and job.result is None
        if ok != n or sum(statuses.values()) != n:
            raise RuntimeError(f"saq: job statuses {statuses}; expected {n} complete")
    finally:
        await queue.disconnect()
    return timing


async def _measure_genq(url: str, n: int, workers: Workers) -> dict[str, float]:
    import redis.asyncio as aioredis

    app = _genq_app()
    async with aioredis.Redis.from_url(url) as redis, app.local(url, workers=False) as client:

        async def unfinished() -> int:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard("genq:q:noop")
                pipe.zcard("genq:delayed:noop")
                pipe.hget("genq:running", "noop")
                ready, delayed, running = await pipe.execute()
            return int(ready) + int(delayed) + int(running or 0)

        timing = await _time_run(redis, workers, 0, lambda: client.submit("noop"),
                                 unfinished, n)
        # Every job succeeded, at its first attempt, with its 3 events.
        ids = await redis.zrange("genq:idx:all", 0, -1)
        ok = 0
        for i in range(0, len(ids), 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in ids[i:i + 1000]:
                    pipe.hmget(f"genq:job:{job_id.decode()}", ["status", "attempts", "seq"])
                for status, attempts, seq in await pipe.execute():
                    ok += (status, attempts, seq) == (b"succeeded", b"1", b"3")
        if len(ids) != n or ok != n:
            raise RuntimeError(f"genq: {len(ids)} jobs, {ok} succeeded once with 3 events; "
                               f"expected {n}")
    return timing


def _check_url(url: str) -> None:
    if urlparse(url).port in (None, 6379):  # the measurement FLUSHDBs it
        raise ValueError(f"refusing {url!r}: use a private redis-server, not port 6379")


def measure_child(peer: str, args: list[str]) -> h.ChildResult:
    """``--child arq|saq URL N K timed|preload``: one measurement (module docstring)."""
    import redis

    url, n, processes, preload = args[0], int(args[1]), int(args[2]), args[3] == "preload"
    _check_url(url)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
        if peer == "saq":
            # Take SAQ's sweep lock (RedisQueue.namespace("sweep")), as if a sweep had just
            # run: a sweep can abort a job that a worker has BLMOVEd but not yet marked
            # active (tobymao/saq#124, #277). It did so here once, with a preloaded queue.
            client.set("saq:default:sweep", 1, ex=3600)
    measure = {"genq": _measure_genq, "arq": _measure_arq, "saq": _measure_saq}[peer]
    workers = Workers(peer, url, preload)
    try:
        workers.start(processes)  # forked from the main thread, before any event loop
        timing = asyncio.run(measure(url, n, workers))
    finally:
        counters = workers.stop()
    bad = [c for c in counters if "complete" not in c or c["failed"] or c["retried"]]
    if bad or sum(c["complete"] for c in counters) != n:
        raise RuntimeError(f"{peer}: worker counters {counters}; expected {n} completed")
    seconds = timing["seconds"]
    cpu = {"workers": sum(c["cpu_s"] for c in counters), "producer": timing["producer_cpu_s"],
           "redis-server": timing["redis_cpu_s"]}
    return {"peer": peer, "n": n, "processes": processes, "preload": preload,
            "seconds": seconds,
            "jobs_per_s": n / seconds, "jobs_per_s_per_process": n / seconds / processes,
            "enqueue_s": timing["enqueue_s"], "ready_s": timing["ready_s"],
            "per_process": [c["complete"] for c in counters],
            "cpu_us_per_job": {k: 1e6 * v / n for k, v in cpu.items()}}


def run_peer(peer: str, url: str, n: int, processes: int, *, preload: bool = False
             ) -> dict[str, Any]:
    """One measurement of ``peer`` ("arq" or "saq") on the Redis at ``url`` (FLUSHDBed;
    never port 6379): N no-op jobs, ``processes`` worker processes of 64 concurrent jobs
    each, in a fresh child process. By default the enqueue is timed; ``preload=True``
    enqueues first and times the workers alone. Returns the dict described in the module
    docstring; raises RuntimeError if the run failed or not exactly N jobs completed."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; expected one of {PEERS}")
    _check_url(url)
    return h.run_child(SCRIPT, peer, [url, str(n), str(processes),
                                      "preload" if preload else "timed"],
                       timeout=60.0 + n / 50)  # allows >= 50 jobs/s


# -- parent (a smoke test on its own) --------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5_000, help="jobs per measurement")
    parser.add_argument("--processes", default="1,2,4", help="worker process counts")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--preload", action="store_true",
                        help="enqueue before releasing the workers; time the workers alone")
    parser.add_argument("--quick", action="store_true", help="N=1,000 at K=1,2 (smoke test)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    opts = parser.parse_args()
    if opts.quick:
        opts.n, opts.processes, opts.rounds = 1_000, "1,2", 1
    counts = [int(k) for k in opts.processes.split(",")]

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from redis_server import RedisServer

    window = ("preloaded queue: workers released -> last completion" if opts.preload else
              "first enqueue -> last completion")
    print(f"bench_redis_jobs: no-op jobs/s on Redis, {window}, N={opts.n:,}, "
          f"{CONCURRENCY} concurrent jobs per worker process")
    machine = h.machine_line()
    print(machine)
    results: dict[tuple[str, int], list[h.ChildResult]] = {}
    # No persistence at all (no AOF, no RDB): a disk fsync per write would dominate.
    with RedisServer(h.scratch("redis-peers-") / "redis", appendfsync=None) as server:
        for r in range(1, opts.rounds + 1):
            for k in counts:
                for peer in PEERS:  # interleaved, so slow phases hit both alike
                    res = run_peer(peer, server.url, opts.n, k, preload=opts.preload)
                    results.setdefault((peer, k), []).append(res)
                    cpu = ", ".join(f"{name} {us:.0f}"
                                    for name, us in res["cpu_us_per_job"].items())
                    print(f"  round {r}/{opts.rounds}  {peer} K={k}  "
                          f"{res['jobs_per_s']:>7,.0f} jobs/s  ({res['seconds']:.2f} s, "
                          f"enqueue {res['enqueue_s']:.2f} s; per process "
                          f"{res['per_process']}; CPU us/job: {cpu})", flush=True)
    rows = []
    for (peer, k), rs in results.items():
        rate = h.median_of(rs, "jobs_per_s")
        rows.append([peer, str(k), f"{rate:,.0f}", f"{rate / k:,.0f}",
                     f"{statistics.median(r['seconds'] for r in rs):.2f}",
                     f"{statistics.median(r['enqueue_s'] for r in rs):.2f}"])
    print()
    print(h.table(["peer", "processes", "jobs/s", "jobs/s per process", "seconds",
                   "enqueue s"], rows))
    if opts.json:
        opts.json.write_text(json.dumps({
            "benchmark": "bench_redis_jobs", "machine": machine, "n": opts.n,
            "preload": opts.preload, "rounds": opts.rounds, "processes": counts,
            "median_jobs_per_s": {f"{peer} K={k}": h.median_of(rs, "jobs_per_s")
                                  for (peer, k), rs in results.items()},
            "runs": [r for rs in results.values() for r in rs]}, indent=1))


if __name__ == "__main__":
    if not h.child_main({"genq": lambda a: measure_child("genq", a),
                         "genq-worker": genq_worker_child,
                         "arq": lambda a: measure_child("arq", a),
                         "saq": lambda a: measure_child("saq", a),
                         "arq-worker": arq_worker_child, "saq-worker": saq_worker_child}):
        main()
