"""Fair share against FIFO: how long one owner's single job waits behind another
owner's backlog, and what fairness costs in throughput.

    PYTHONPATH=src:. .venv/bin/python bench/bench_fair_share.py [--jobs 500]
        [--seconds 0.05] [--slots 4] [--rounds 2] [--stores sqlite,redis]

Each run is a fresh child process (bench/_harness.py) with an ``Engine`` (one worker
replica) serving ``work``, an async sleep of ``--seconds`` run ``--slots`` at a time, on
a fresh store: a SQLite file, or a private redis-server (never port 6379) under a prefix
of its own. Owner alice submits ``--jobs`` jobs at once (``JobService.submit``, the call
the HTTP API makes), then owner bob submits one. Both modes run interleaved, round after
round, on each store:

* **fair**: the default, ``fair_share`` on (owners take turns within a priority:
  genq.store.sqlite_queues);
* **fifo**: the same store with ``fair_share=False`` (``?fair_share=0`` in a store URL):
  claims in arrival order, as before fair share.

Per run: bob's wait (``started_at - created_at``) in seconds and in job durations; how
many jobs started before his; the throughput of the whole batch (all jobs over first
submission to last finish). The table shows medians over the rounds, and the ratios
fair / fifo. Goals: bob waits a few job durations at most with fair share (not the
``--jobs / --slots`` of FIFO), and throughput stays within 5 % of FIFO's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import _harness as h  # noqa: E402

MODES = ("fair", "fifo")


def child_run(args: list[str]) -> h.ChildResult:
    """ARGS: store (sqlite | redis URL), mode, jobs, seconds, slots."""
    import genq
    from genq.engine import Engine
    from genq.store.base import Store
    from genq.store.redis import RedisStore
    from genq.store.sqlite import SQLiteStore

    where, mode, jobs, seconds, slots = args[0], args[1], int(args[2]), float(args[3]), \
        int(args[4])
    fair = mode == "fair"
    app = genq.App("bench-fair-share")

    @app.function(concurrency=slots, max_queue=None)
    async def work(i: int) -> int:
        await asyncio.sleep(seconds)
        return i

    store: Store = (SQLiteStore(h.scratch("genq-fair-") / "db.sqlite3", fair_share=fair)
                    if where == "sqlite" else
                    RedisStore(where, prefix=f"fair{uuid.uuid4().hex[:8]}", fair_share=fair))
    engine = Engine(app, store)

    async def main() -> h.ChildResult:
        async with anyio.create_task_group() as tg:
            await tg.start(engine.serve)
            alice = await asyncio.gather(*(engine.jobs.submit("alice", "work", {"i": i})
                                           for i in range(jobs)))
            bob = await engine.jobs.submit("bob", "work", {"i": -1})
            ids = [("alice", s.job.id) for s in alice] + [("bob", bob.job.id)]
            done = [await engine.jobs.wait(owner, job_id) for owner, job_id in ids]
            await engine.stop()
            tg.cancel_scope.cancel()
        assert all(j.status.value == "succeeded" for j in done)
        mine = done[-1]
        assert mine.started_at is not None
        began = min(j.created_at for j in done)
        ended = max(j.finished_at or 0.0 for j in done)
        wait = mine.started_at - mine.created_at
        return {"bob_wait_s": wait, "bob_wait_jobs": wait / seconds,
                "started_before_bob": sum(1 for j in done[:-1]
                                          if (j.started_at or 0.0) < mine.started_at),
                "jobs_per_s": len(done) / (ended - began), "wall_s": ended - began}

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="alice's backlog")
    parser.add_argument("--seconds", type=float, default=0.05, help="one job's run time")
    parser.add_argument("--slots", type=int, default=4, help="jobs run at once")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stores", default="sqlite,redis")
    opts = parser.parse_args()
    stores = opts.stores.split(",")
    print(f"bench_fair_share: alice queues {opts.jobs} jobs of {opts.seconds * 1000:.0f} ms, "
          f"then bob 1; {opts.slots} run at once; {opts.rounds} rounds, medians")
    print(h.machine_line())

    from tests.support.redis_server import RedisServer

    results: dict[tuple[str, str], list[h.ChildResult]] = {}
    server: Any = None
    try:
        if "redis" in stores:
            server = RedisServer(h.scratch("genq-fair-redis-") / "redis", appendfsync=None)
            server.start()
        for r in range(1, opts.rounds + 1):
            for store in stores:
                where = server.url if store == "redis" else "sqlite"
                for mode in MODES:  # interleaved, so slow phases hit both alike
                    res = h.run_child(__file__, "run", [where, mode, str(opts.jobs),
                                                         str(opts.seconds), str(opts.slots)],
                                      timeout=600)
                    results.setdefault((store, mode), []).append(res)
                    print(f"  round {r}/{opts.rounds}  {store:6}  {mode}: bob waited "
                          f"{res['bob_wait_s']:.3f} s ({res['bob_wait_jobs']:.1f} jobs; "
                          f"{res['started_before_bob']} started before him), "
                          f"{res['jobs_per_s']:.1f} jobs/s", flush=True)
    finally:
        if server is not None:
            server.stop()

    rows = []
    for store in stores:
        for mode in MODES:
            rs = results[(store, mode)]
            rows.append([store, mode, f"{h.median_of(rs, 'bob_wait_s'):.3f}",
                         f"{h.median_of(rs, 'bob_wait_jobs'):.1f}",
                         f"{h.median_of(rs, 'started_before_bob'):.0f}",
                         f"{h.median_of(rs, 'jobs_per_s'):.1f}"])
    print()
    print(h.table(["store", "mode", "bob wait s", "in job durations", "started before bob",
                   "jobs/s"], rows))
    print()
    for store in stores:
        fair, fifo = results[(store, "fair")], results[(store, "fifo")]
        wait = h.median_of(fifo, "bob_wait_s") / max(h.median_of(fair, "bob_wait_s"), 1e-9)
        rate = h.median_of(fair, "jobs_per_s") / h.median_of(fifo, "jobs_per_s")
        print(f"{store}: bob waits {wait:.0f}x less with fair share; throughput fair/fifo "
              f"= {rate:.3f} ({(rate - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    if not h.child_main({"run": child_run}):
        main()
