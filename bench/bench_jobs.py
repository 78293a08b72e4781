"""No-op jobs per second, submit to result, through ``app.local()`` with the durable
SQLite store; against huey (SqliteHuey-style storage, thread consumer) and a naive
ThreadPoolExecutor + sqlite3 queue, side by side in the same run.

    .venv/bin/python bench/bench_jobs.py            # ~50 s: 3 interleaved rounds
    .venv/bin/python bench/bench_jobs.py --quick    # one small round, a smoke test

What one "job" is, for each system (all three commit every state change to a SQLite file
in WAL mode with synchronous=NORMAL before reporting it, so durability is like for like):

* genq: ``await client.map(fn, [{}] * N, concurrency=256)`` where fn is an ``async def``
  or a ``def`` that returns None, registered with ``concurrency=64``. Per job: input
  validation, the job row, the queued / started / succeeded events, the in-memory queue,
  the worker's claim, limits and settle; ``submit`` awaits the commit of the job, and the
  result is returned only once the terminal state is committed.
* huey 3 (``Huey`` with ``SqliteStorage``, the storage of ``SqliteHuey``), with
  ``immediate=False`` and a consumer of 4 worker threads in the same process,
  ``store_none=True`` so a None result is stored, and poll delays cut to 1-5 ms (the
  defaults of 0.1-10 s would measure sleeping). The producer keeps 256 tasks in flight and
  polls their results (``Result.is_ready``), like ``map(concurrency=256)``.
* naive: a ThreadPoolExecutor of 16 threads; per job one thread inserts the row (commit),
  runs the no-op, updates the row with the result (commit), with 256 jobs in flight.

The figure is N / (time from the first submit to the last result). The children also
report CPU per job split by thread, which is where the time goes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sqlite3
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

WARMUP = 500
MAP_CONCURRENCY = 256


# -- genq ------------------------------------------------------------------------------
def genq_child(args: list[str]) -> h.ChildResult:
    import genq

    kind, n, fn_concurrency = args[0], int(args[1]), int(args[2])
    app = genq.App()

    @app.function(name="noop", concurrency=fn_concurrency)
    async def async_noop() -> None:
        return None

    @app.function(name="noop_sync", concurrency=fn_concurrency)
    def sync_noop() -> None:
        return None

    fn = "noop" if kind == "async" else "noop_sync"
    db = h.scratch("genq-bench-") / "genq.sqlite3"
    cpu = h.ThreadCPU()

    async def main() -> float:
        async with app.local(db) as client:
            await client.map(fn, [{}] * WARMUP, concurrency=MAP_CONCURRENCY)
            cpu.start()
            t0 = h.now()
            results = await client.map(fn, [{}] * n, concurrency=MAP_CONCURRENCY)
            elapsed = h.now() - t0
            cpu.stop(lambda name: "sqlite writer" if "writer" in name else "worker threads")
            assert results == [None] * n
            return elapsed

    elapsed = asyncio.run(main())
    with sqlite3.connect(db) as conn:  # everything reported was committed
        done = conn.execute("SELECT count(*) FROM jobs WHERE status='succeeded'").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert done == n + WARMUP, (done, n + WARMUP)
    assert events == 3 * (n + WARMUP), events
    return {"jobs_per_s": n / elapsed, "n": n, "seconds": elapsed,
            "cpu_us_per_job": {k: 1e6 * v / n for k, v in cpu.by_name.items()}}


# -- huey ------------------------------------------------------------------------------
def huey_child(args: list[str]) -> h.ChildResult:
    import logging

    from huey import Huey
    from huey.storage import SqliteStorage

    n, workers = int(args[0]), int(args[1])
    logging.getLogger("huey").setLevel(logging.WARNING)

    class Storage(SqliteStorage):  # type: ignore[misc]
        """SqliteHuey's storage with genq's durability setting (WAL + NORMAL)."""

        def _create_connection(self) -> sqlite3.Connection:
            conn: sqlite3.Connection = super()._create_connection()
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn

    tmp = h.scratch("huey-bench-")
    huey = Huey("bench", storage_class=Storage, filename=str(tmp / "huey.db"),
                immediate=False, store_none=True)

    @huey.task()
    def noop() -> None:
        return None

    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False,
                                    initial_delay=0.001, backoff=1.15, max_delay=0.005,
                                    check_worker_health=False)
    consumer.start()

    def run(count: int) -> float:
        t0 = h.now()
        pending: collections.deque[Any] = collections.deque()
        sent = done = 0
        while done < count:
            while sent < count and len(pending) < MAP_CONCURRENCY:
                pending.append(noop())
                sent += 1
            progressed = False
            for _ in range(len(pending)):
                result = pending.popleft()
                if result.is_ready():
                    done += 1
                    progressed = True
                else:
                    pending.append(result)
            if not progressed:
                time.sleep(0.0005)
        return h.now() - t0

    cpu = h.ThreadCPU()
    try:
        run(WARMUP)
        cpu.start()
        elapsed = run(n)
        cpu.stop(lambda name: "huey consumer threads")
    finally:
        consumer.stop(graceful=True)
    return {"jobs_per_s": n / elapsed, "n": n, "seconds": elapsed,
            "cpu_us_per_job": {k: 1e6 * v / n for k, v in cpu.by_name.items()}}


# -- naive -----------------------------------------------------------------------------
def naive_child(args: list[str]) -> h.ChildResult:
    n, threads = int(args[0]), int(args[1])
    db = h.scratch("naive-bench-") / "naive.sqlite3"
    with sqlite3.connect(db, isolation_level=None) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, "
                      "input TEXT NOT NULL, result TEXT)")
    local = threading.local()

    def conn() -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(local, "conn", None)
        if c is None:
            c = local.conn = sqlite3.connect(db, isolation_level=None, timeout=30)
            c.execute("PRAGMA synchronous=NORMAL")
        return c

    def noop() -> None:
        return None

    def job() -> Any:
        c = conn()
        job_id = c.execute("INSERT INTO jobs (status, input) VALUES ('queued', '{}')").lastrowid
        value = noop()
        c.execute("UPDATE jobs SET status='succeeded', result='null' WHERE id=?", (job_id,))
        return value

    def run(pool: ThreadPoolExecutor, count: int) -> float:
        t0 = h.now()
        window: collections.deque[Future[Any]] = collections.deque()
        for _ in range(count):
            if len(window) >= MAP_CONCURRENCY:
                window.popleft().result()
            window.append(pool.submit(job))
        for fut in window:
            fut.result()
        return h.now() - t0

    cpu = h.ThreadCPU()
    with ThreadPoolExecutor(threads) as pool:
        run(pool, WARMUP)
        cpu.start()
        elapsed = run(pool, n)
        cpu.stop(lambda name: "pool threads")
    return {"jobs_per_s": n / elapsed, "n": n, "seconds": elapsed,
            "cpu_us_per_job": {k: 1e6 * v / n for k, v in cpu.by_name.items()}}


# -- parent ----------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="genq jobs per measurement")
    parser.add_argument("--peer-n", type=int, default=10_000, help="peer jobs per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fn-concurrency", type=int, default=64)
    parser.add_argument("--huey-workers", type=int, default=4)
    parser.add_argument("--naive-threads", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="one small round (smoke test)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    opts = parser.parse_args()
    if opts.quick:
        opts.n, opts.peer_n, opts.rounds = 2_000, 1_000, 1

    script = os.path.abspath(__file__)
    print("bench_jobs: no-op jobs/s, submit -> result, durable SQLite, "
          f"map concurrency {MAP_CONCURRENCY}")
    machine = h.machine_line()
    print(machine)
    plan = [
        ("genq async def", ["async", str(opts.n), str(opts.fn_concurrency)]),
        ("genq def", ["sync", str(opts.n), str(opts.fn_concurrency)]),
        ("huey", [str(opts.peer_n), str(opts.huey_workers)]),
        ("naive threads+sqlite3", [str(opts.peer_n), str(opts.naive_threads)]),
    ]
    modes = {"genq async def": "genq", "genq def": "genq", "huey": "huey",
             "naive threads+sqlite3": "naive"}
    results: dict[str, list[h.ChildResult]] = {label: [] for label, _ in plan}
    for r in range(1, opts.rounds + 1):
        for label, args in plan:
            res = h.run_child(script, modes[label], args)
            results[label].append(res)
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in sorted(res["cpu_us_per_job"].items()))
            print(f"  round {r}/{opts.rounds}  {label:<22} {res['jobs_per_s']:>8,.0f} jobs/s"
                  f"   (n={res['n']:,}; CPU us/job: {cpu})", flush=True)

    med = {label: h.median_of(rs, "jobs_per_s") for label, rs in results.items()}
    huey = med["huey"]
    naive = med["naive threads+sqlite3"]
    rows = [[label, f"{v:,.0f}", f"{v / huey:.2f}x", f"{v / naive:.2f}x",
             "yes" if label.startswith("genq") and v >= 10_000 else
             ("no" if label.startswith("genq") else "")]
            for label, v in med.items()]
    print()
    print(h.table(["system", "jobs/s (median)", "vs huey", "vs naive", ">= 10,000/s"], rows))
    if opts.json:
        opts.json.write_text(json.dumps({
            "benchmark": "bench_jobs", "machine": machine, "n": opts.n,
            "peer_n": opts.peer_n, "rounds": opts.rounds, "median_jobs_per_s": med,
            "runs": results}, indent=1))


if __name__ == "__main__":
    if not h.child_main({"genq": genq_child, "huey": huey_child, "naive": naive_child}):
        main()
