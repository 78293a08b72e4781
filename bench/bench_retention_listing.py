"""Listing, the dashboard's figures and the retention sweep with 100k finished jobs in
the store, on SQLite and on Redis (a private redis-server, never port 6379):

    .venv/bin/python bench/bench_retention_listing.py              # both stores, 100k jobs
    .venv/bin/python bench/bench_retention_listing.py --jobs 20000 --stores sqlite

Set-up is a bulk load (rows or hashes written directly, as the stores lay them out: a
job with its queued, started and terminal events; 90% succeeded, 7% failed, 3%
cancelled; 10 owners, 4 functions; every job finished 8 days ago), plus 20 queued jobs
submitted through the store. Then, each timed as the median of several runs:

* ``list_jobs`` as GET /api/jobs calls it (always one owner, newest first, 50 a page):
  the first page, a page by function, by a terminal status (failed: 7%), by function
  and status (cancelled: 0.75% of an owner's jobs), the live jobs (status=queued: 20 in
  all), a second page (``before``); and without an owner (store-level tools only);
* GET /api/stats and GET /api/jobs?limit=50 over HTTP, a real uvicorn on loopback;
* the retention sweep: ``housekeep`` with ``retain`` 7 d, called until every job is
  gone, in its batches of ``RETAIN_BATCH``; the slowest call is what a worker's
  maintenance loop (and, on SQLite, the write lock) waits for at most.

Figures only, never pass/fail: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from genq import App
from genq.models import Job, JobStatus, new_job_id
from genq.server import ServerSettings, create_server
from genq.store import Store, store_from_url
from genq.store.base import SubmitPolicy
from genq.store.redis import _job_hash
from genq.store.retention import RETAIN_BATCH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

OWNERS = ["local", *(f"user{i}" for i in range(1, 10))]  # "local": the owner without keys
FUNCTIONS = ["render", "caption", "upscale", "chat"]
DAY = 86400.0
app = App("bench")
for _name in FUNCTIONS:
    app.function(name=_name)(lambda: None)


def _status(i: int) -> JobStatus:
    r = i % 100
    return JobStatus.FAILED if r < 7 else JobStatus.CANCELLED if r < 10 else JobStatus.SUCCEEDED


def _jobs(n: int, now: float) -> list[tuple[Job, list[tuple[str, str]]]]:
    """n finished jobs, oldest first, each with its events (type, JSON data)."""
    out = []
    base = now - 9 * DAY
    rng = random.Random(9)
    for i in range(n):
        created = base + i * (0.5 * DAY / n)
        status = _status(rng.randrange(100))
        job = Job(id=new_job_id(), function=rng.choice(FUNCTIONS), input={"prompt": f"p{i}"},
                  owner=rng.choice(OWNERS), status=status, created_at=created,
                  started_at=created + 1, finished_at=created + 2, attempts=1,
                  result=f"r{i}" if status is JobStatus.SUCCEEDED else None,
                  error={"type": "E", "message": "x"} if status is JobStatus.FAILED else None)
        end = (f'{{"result":"r{i}"}}' if status is JobStatus.SUCCEEDED
               else '{"error":{"type":"E","message":"x"}}' if status is JobStatus.FAILED
               else '{"reason":"cancelled by request"}')
        out.append((job, [("queued", '{"position":1}'),
                          ("started", '{"attempt":1,"max_attempts":1,"worker":"w"}'),
                          (status.value, end)]))
    return out


def load_sqlite(path: Path, jobs: list[tuple[Job, list[tuple[str, str]]]]) -> None:
    from genq.store.sqlite import _INSERT_EVENT, _INSERT_JOB, _job_params

    with sqlite3.connect(path) as conn:
        conn.executemany(_INSERT_JOB, [_job_params(j) for j, _ in jobs])
        conn.executemany(_INSERT_EVENT, [(j.id, k + 1, t, j.finished_at, d)
                                         for j, evs in jobs for k, (t, d) in enumerate(evs)])


async def load_redis(store: Any, jobs: list[tuple[Job, list[tuple[str, str]]]]) -> None:
    r, p = store._r(), store.prefix
    for start in range(0, len(jobs), 2000):
        async with r.pipeline(transaction=False) as pipe:
            for job, events in jobs[start:start + 2000]:
                fields = _job_hash(job)
                fields[fields.index("seq") + 1] = str(len(events))
                pipe.hset(f"{p}:job:{job.id}", mapping=dict(zip(fields[::2], fields[1::2],
                                                                strict=True)))
                pipe.zadd(f"{p}:idx:all", {job.id: job.created_at})
                pipe.zadd(f"{p}:idx:owner:{job.owner}", {job.id: job.created_at})
                pipe.zadd(f"{p}:finished", {job.id: job.finished_at})
                for k, (t, d) in enumerate(events):
                    pipe.xadd(f"{p}:ev:{job.id}", {"t": t, "d": d, "ts": repr(job.finished_at)},
                              id=f"0-{k + 1}")
            await pipe.execute()


async def timed(fn: Callable[[], Awaitable[Any]], runs: int = 7) -> tuple[float, Any]:
    """Median milliseconds of ``runs`` calls (after one warm-up), and the last answer."""
    answer = await fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        answer = await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def over_http(url: str) -> dict[str, float]:
    """GET /api/stats and /api/jobs from a real uvicorn serving the store (no workers)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_server(app, store_from_url(url), ServerSettings(workers=False)),
        host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    figures = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for _ in range(300):
                try:
                    # /healthz: a server without workers is up but never /readyz-ready.
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)

            async def get(path: str) -> Any:
                response = await http.get(path)
                response.raise_for_status()
                return response.json()

            figures["GET /api/stats"], _ = await timed(lambda: get("/api/stats"))
            figures["GET /api/jobs?limit=50"], page = await timed(
                lambda: get("/api/jobs?limit=50"))
            assert len(page["jobs"]) == 50
            figures["GET /api/jobs?status=failed"], _ = await timed(
                lambda: get("/api/jobs?status=failed&limit=50"))
    finally:
        server.should_exit = True
        thread.join(30)
    return figures


async def measure(kind: str, url: str, n: int) -> dict[str, Any]:
    now = time.time()
    jobs = _jobs(n, now)
    store: Store = store_from_url(url)
    await store.open()  # creates the schema / connects
    t0 = time.perf_counter()
    if kind == "sqlite":
        await store.close()
        load_sqlite(Path(url.removeprefix("sqlite:///")), jobs)
        store = store_from_url(url)
        await store.open()
    else:
        await load_redis(store, jobs)
    load_s = time.perf_counter() - t0
    queued = [(await store.create_job(Job(id=new_job_id(), function=FUNCTIONS[i % 4],
                                          input={"i": i}, owner=OWNERS[i % 10]),
                                      SubmitPolicy())).job for i in range(20)]
    figures: dict[str, Any] = {"store": kind, "jobs": n, "bulk load (s)": round(load_s, 1)}
    owner = "user3"
    mid = jobs[n // 2][0].created_at
    cases: dict[str, Callable[[], Awaitable[list[Job]]]] = {
        "owner, first page": lambda: store.list_jobs(owner=owner),
        "owner, second page (before)": lambda: store.list_jobs(owner=owner, before=mid),
        "owner + function": lambda: store.list_jobs(owner=owner, function="caption"),
        "owner + status=failed": lambda: store.list_jobs(owner=owner,
                                                         status=JobStatus.FAILED),
        "owner + function + status=cancelled": lambda: store.list_jobs(
            owner=owner, function="caption", status=JobStatus.CANCELLED),
        "owner + status=queued (2 live)": lambda: store.list_jobs(
            owner=owner, status=JobStatus.QUEUED),
        "no owner, first page": lambda: store.list_jobs(),
        "no owner + status=failed": lambda: store.list_jobs(status=JobStatus.FAILED),
    }
    for name, case in cases.items():
        ms, found = await timed(case)
        figures[f"list_jobs {name} (ms)"] = round(ms, 2)
        figures[f"list_jobs {name} (rows)"] = len(found)
    await store.close()
    for name, ms in (await over_http(url)).items():
        figures[f"{name} (ms)"] = round(ms, 2)

    store = store_from_url(url)  # retention: the default 7 days, every job 8 days old
    await store.open()
    calls, slowest, swept = 0, 0.0, 0.0
    while calls <= n // RETAIN_BATCH + 5:
        c0 = time.perf_counter()
        await store.housekeep(time.time())
        took = time.perf_counter() - c0
        slowest, swept, calls = max(slowest, took), swept + took, calls + 1
        if len(await store.list_jobs(limit=len(queued) + 1)) <= len(queued):
            break
    sweep_s = swept
    left = await store.list_jobs(limit=100)
    await store.close()
    figures["retention sweep, all (s)"] = round(sweep_s, 2)
    figures["retention sweep, housekeep calls"] = calls
    figures[f"retention sweep, slowest call of {RETAIN_BATCH} jobs (ms)"] = round(
        slowest * 1000, 1)
    figures["jobs left after the sweep (the live ones)"] = len(left)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="genq-bench-retention-") as tmp:
        for kind in args.stores.split(","):
            if kind == "sqlite":
                results.append(asyncio.run(measure(
                    kind, f"sqlite:///{tmp}/genq.sqlite3", args.jobs)))
            else:
                from redis_server import RedisServer

                with RedisServer(Path(tmp) / "redis", appendfsync=None) as server:
                    results.append(asyncio.run(measure(kind, server.url, args.jobs)))
    for figures in results:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
