"""Warm routing against plain FIFO claiming, on Redis with real ``genq worker``
processes: how many model loads, how long the whole batch takes, how long jobs wait.

    PYTHONPATH=src:. .venv/bin/python bench/bench_warm_routing.py [--jobs 300] [--workers 3]

Both modes in one run, each on a fresh private redis-server (never port 6379) with
``--workers`` ``genq worker bench/warm_apps.py:app`` processes: concurrency 1 each, a
keyed model family (``max_models=2`` per worker, a load sleeps 1 s), ``--models`` models.
Once every worker has reported itself, ``--jobs`` jobs of 0.1 s are submitted at once
through ``app.local(url, workers=False)``, each naming a model drawn from a Zipf law
(s = 1.1, fixed seed: the same jobs in both modes). The clock runs from the first submit
to the last result.

* **warm**: the function's default ``warm_wait`` (30 s): claims prefer jobs whose model
  the worker holds, then jobs whose model no other worker holds (genq.store.routing).
* **fifo**: the same app with ``warm_wait=0`` (``GENQ_BENCH_WARM_WAIT=0``): every job is
  overdue at once, so claims take the queue's head, as without routing. The run checks
  that it is FIFO: no job starts before one queued earlier.

Per mode: loads (the sum over workers: each job says whether it loaded its model), wall
time, p50 and max queue wait (``started_at - created_at``), how many jobs started out of
submission order, and how many were passed over past the bound (a later job started
while it had already waited ``warm_wait``: the bound routing promises; must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

TARGET = "bench/warm_apps.py:app"
ZIPF_S = 1.1
SEED = 15
READY_TIMEOUT = 60.0
SKEW = 0.05  # seconds: see passed_over


def zipf_models(jobs: int, models: int, seed: int = SEED) -> list[str]:
    weights = [1 / k ** ZIPF_S for k in range(1, models + 1)]
    rng = random.Random(seed)
    return rng.choices([f"m{k}" for k in range(1, models + 1)], weights, k=jobs)


def worker_env(warm_wait: float) -> dict[str, str]:
    env = dict(os.environ, GENQ_BENCH_WARM_WAIT=repr(warm_wait))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def wait_for_workers(url: str, count: int) -> None:
    import redis

    deadline = time.monotonic() + READY_TIMEOUT
    with redis.Redis.from_url(url) as r:
        while len(r.hgetall("genq:workers")) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workers did not report in {READY_TIMEOUT} s")
            time.sleep(0.1)


async def run_jobs(url: str, models: list[str]) -> dict[str, Any]:
    from warm_apps import app

    async with app.local(url, workers=False) as client:
        start = time.perf_counter()
        jobs = [await client.submit("generate", checkpoint=m) for m in models]
        results = [await job.result(timeout=600) for job in jobs]
        wall = time.perf_counter() - start
        infos = [await job.info() for job in jobs]
    return {"wall": wall, "results": results,
            "times": [(i.created_at, i.started_at) for i in infos]}


def passed_over(times: list[tuple[float, float]], bound: float) -> tuple[int, int]:
    """(jobs that started after a job submitted later, of those: how many had waited
    ``bound`` s already when that later job started). ``started_at`` is the claiming
    worker's clock read just before its CLAIM round trip, so two claims racing may stamp
    their jobs out of order by that round trip: starts within ``SKEW`` count as one."""
    out_of_order = beyond = 0
    for created, started in times:
        later = [s for c, s in times if c > created and s < started - SKEW]
        if later:
            out_of_order += 1
            if max(later) - created >= bound:
                beyond += 1
    return out_of_order, beyond


def measure(mode: str, warm_wait: float, models: list[str], workers: int) -> dict[str, Any]:
    from tests.support.redis_server import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="genq-warm-bench-"))
    try:
        with RedisServer(tmp / "redis", appendfsync="everysec") as redis_server:
            procs = []
            try:
                for i in range(workers):
                    with (tmp / f"worker-{i}.log").open("wb") as out:
                        procs.append(subprocess.Popen(
                            [sys.executable, "-m", "genq.cli", "worker", TARGET, "--store",
                             redis_server.url],
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=worker_env(warm_wait)))
                wait_for_workers(redis_server.url, workers)
                run = asyncio.run(run_jobs(redis_server.url, models))
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    waits = [s - c for c, s in run["times"]]
    per_worker: dict[int, int] = {}
    for r in run["results"]:
        per_worker[r["pid"]] = per_worker.get(r["pid"], 0) + int(r["loaded"])
    out_of_order, beyond = passed_over(run["times"], warm_wait)
    return {"mode": mode, "warm_wait": warm_wait, "jobs": len(models),
            "loads": sum(per_worker.values()), "loads_per_worker": sorted(per_worker.values()),
            "wall_s": round(run["wall"], 2), "wait_p50_s": round(statistics.median(waits), 2),
            "wait_max_s": round(max(waits), 2), "out_of_order": out_of_order,
            "passed_over_beyond_bound": beyond}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    from warm_apps import WARM_WAIT

    models = zipf_models(args.jobs, args.models)
    counts = {m: models.count(m) for m in sorted(set(models))}
    print(f"{args.jobs} jobs over {args.models} models (Zipf s={ZIPF_S}, seed {SEED}): "
          f"{counts}", flush=True)
    warm = measure("warm", WARM_WAIT, models, args.workers)
    fifo = measure("fifo", 0.0, models, args.workers)
    rows = [warm, fifo]
    if args.json:
        print(json.dumps(rows))
    keys = ("loads", "loads_per_worker", "wall_s", "wait_p50_s", "wait_max_s",
            "out_of_order", "passed_over_beyond_bound")
    print(f"{'':28}{'warm':>14}{'fifo':>14}")
    for key in keys:
        print(f"{key:28}{warm[key]!s:>14}{fifo[key]!s:>14}")
    print(f"loads: {fifo['loads'] / max(1, warm['loads']):.1f}x fewer with warm routing; "
          f"wall time: {fifo['wall_s'] / warm['wall_s']:.2f}x less; "
          f"p50 wait: {fifo['wait_p50_s'] / max(0.01, warm['wait_p50_s']):.2f}x less")
    if fifo["out_of_order"]:
        print("WARNING: warm_wait=0 did not claim in FIFO order")


if __name__ == "__main__":
    main()
