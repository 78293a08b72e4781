"""Chunks per second from a blocking sync generator to an async consumer in the same
process: genq (every chunk persisted to the job's event log) against the common naive
patterns (no persistence at all), side by side in the same run.

    .venv/bin/python bench/bench_stream.py            # ~30 s: 3 interleaved rounds
    .venv/bin/python bench/bench_stream.py --quick    # one small round, a smoke test

The producer is the same in every case: ``def tokens(n): for i in range(n): yield
f"{i} "`` (a sync generator, as transformers' TextIteratorStreamer is).

* genq: ``async for chunk in client.stream("tokens", n=N)`` inside ``async with
  app.local(db)``. The generator runs in a worker thread behind genq's bounded bridge;
  each chunk becomes an ``output`` event in the durable log before the consumer sees it.
  The child checks afterwards, in the SQLite file, that there are exactly N output events
  and that the consumer got every chunk in order.
* genq on Redis, in one process: the same, with ``app.local("redis://...")``: every
  chunk is an entry of the job's Redis Stream (written by the APPEND script) before the
  consumer reads it back with XREAD. A private redis-server with AOF ``everysec``
  (docs/redis.md). The child checks the order and the stream's length (XLEN = N + 3).
* genq on Redis, worker process: the generator runs in a separate worker process (what
  ``genq worker`` runs); the consumer is ``app.local(url, workers=False)``: yield ->
  worker -> Redis -> XREAD in another process, as in a cluster.
* genq bridge only: ``genq.iterate_in_thread(tokens(N))`` -- the same thread bridge with
  no job, no store, no persistence, to show what the durable log costs.
* naive to_thread: ``await anyio.to_thread.run_sync(next, gen, None)`` per chunk.
* naive run_in_executor: ``await loop.run_in_executor(None, next, gen, None)`` per chunk.

The figure is N / (time from submit, or the first ``next``, to the last chunk received).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

TARGET = 100_000
REDIS_TARGET = 50_000


def tokens(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"{i} "


def _check_order(received: list[str], n: int) -> None:
    assert len(received) == n, (len(received), n)
    assert received[0] == "0 " and received[-1] == f"{n - 1} ", (received[0], received[-1])
    assert received == [f"{i} " for i in range(n)], "chunks out of order"


def genq_child(args: list[str]) -> h.ChildResult:
    import genq

    n = int(args[0])
    app = genq.App()
    app.function(name="tokens", concurrency=1)(tokens)
    db = h.scratch("genq-bench-") / "genq.sqlite3"
    cpu = h.ThreadCPU()

    async def main() -> tuple[float, list[str]]:
        async with app.local(db) as client:
            async for _ in client.stream("tokens", n=1000):  # warm-up
                pass
            received: list[str] = []
            cpu.start()
            t0 = h.now()
            async for chunk in client.stream("tokens", n=n):
                received.append(chunk)
            elapsed = h.now() - t0
            cpu.stop(lambda name: "sqlite writer" if "writer" in name else "generator thread")
            return elapsed, received

    elapsed, received = asyncio.run(main())
    _check_order(received, n)
    with sqlite3.connect(db) as conn:  # the store is closed: count what was committed
        (job_id,) = conn.execute(
            "SELECT id FROM jobs WHERE status='succeeded' ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        persisted = conn.execute("SELECT count(*) FROM events WHERE job_id=? AND type='output'",
                                 (job_id,)).fetchone()[0]
    assert persisted == n, (persisted, n)
    return {"chunks_per_s": n / elapsed, "n": n, "persisted": persisted,
            "cpu_us_per_chunk": {k: 1e6 * v / n for k, v in cpu.by_name.items()}}


def _tokens_app() -> Any:
    import genq

    app = genq.App()
    app.function(name="tokens", concurrency=1)(tokens)
    return app


def redis_worker_child(args: list[str]) -> h.ChildResult:
    """A worker process on the Redis store, until SIGTERM (``genq worker`` in short)."""
    import anyio

    from genq.store.redis import RedisStore
    from genq.worker import Worker

    app = _tokens_app()

    async def main() -> None:
        store = RedisStore(args[0])
        await store.open()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(Worker(app.functions, store).run)
                print("ready", flush=True)
                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                tg.cancel_scope.cancel()
        finally:
            await store.close()

    anyio.run(main)
    return {}


def genq_redis_child(args: list[str]) -> h.ChildResult:
    import redis

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from redis_server import RedisServer

    n, separate = int(args[0]), args[1] == "worker-process"
    app = _tokens_app()
    with RedisServer(h.scratch("genq-redis-") / "redis", appendfsync="everysec") as server:
        worker = None
        if separate:
            worker = subprocess.Popen([sys.executable, __file__, "--child", "redis-worker",
                                       server.url], stdout=subprocess.PIPE, text=True)
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        try:

            async def main() -> tuple[float, list[str], str]:
                async with app.local(server.url, workers=not separate) as client:
                    async for _ in client.stream("tokens", n=1000):  # warm-up
                        pass
                    received: list[str] = []
                    t0 = h.now()
                    async for chunk in client.stream("tokens", n=n):
                        received.append(chunk)
                    elapsed = h.now() - t0
                    [job] = await client.list_jobs(function="tokens", limit=1)
                    return elapsed, received, job.id

            elapsed, received, job_id = asyncio.run(main())
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
        _check_order(received, n)
        with redis.Redis.from_url(server.url) as r:
            persisted = int(r.xlen(f"genq:ev:{job_id}")) - 3  # queued, started, succeeded
    assert persisted == n, (persisted, n)
    return {"chunks_per_s": n / elapsed, "n": n, "persisted": persisted}


def bridge_child(args: list[str]) -> h.ChildResult:
    import genq

    n = int(args[0])

    async def main() -> tuple[float, list[str]]:
        received: list[str] = []
        t0 = h.now()
        async for chunk in genq.iterate_in_thread(tokens(n)):
            received.append(chunk)
        return h.now() - t0, received

    elapsed, received = asyncio.run(main())
    _check_order(received, n)
    return {"chunks_per_s": n / elapsed, "n": n, "persisted": 0}


def to_thread_child(args: list[str]) -> h.ChildResult:
    import anyio.to_thread

    n = int(args[0])

    async def main() -> tuple[float, list[str]]:
        gen = tokens(n)
        received: list[str] = []
        t0 = h.now()
        while (chunk := await anyio.to_thread.run_sync(next, gen, None)) is not None:
            received.append(chunk)
        return h.now() - t0, received

    elapsed, received = asyncio.run(main())
    _check_order(received, n)
    return {"chunks_per_s": n / elapsed, "n": n, "persisted": 0}


def executor_child(args: list[str]) -> h.ChildResult:
    n = int(args[0])

    async def main() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()
        gen = tokens(n)
        received: list[str] = []
        t0 = h.now()
        while (chunk := await loop.run_in_executor(None, next, gen, None)) is not None:
            received.append(chunk)
        return h.now() - t0, received

    elapsed, received = asyncio.run(main())
    _check_order(received, n)
    return {"chunks_per_s": n / elapsed, "n": n, "persisted": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300_000, help="chunks in the genq stream")
    parser.add_argument("--peer-n", type=int, default=50_000,
                        help="chunks for the naive per-chunk thread hops (they are slow)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one small round (smoke test)")
    opts = parser.parse_args()
    if opts.quick:
        opts.n, opts.peer_n, opts.rounds = 20_000, 5_000, 1

    script = os.path.abspath(__file__)
    print("bench_stream: chunks/s from a sync generator to an in-process async consumer")
    print(h.machine_line())
    plan = [
        ("genq stream (durable)", "genq", opts.n),
        ("genq on Redis, 1 process", "genq-redis", opts.n),
        ("genq on Redis, worker proc", "genq-redis-worker", opts.n),
        ("genq bridge only", "bridge", opts.n),
        ("naive to_thread/chunk", "to_thread", opts.peer_n),
        ("naive executor/chunk", "executor", opts.peer_n),
    ]
    results: dict[str, list[h.ChildResult]] = {label: [] for label, _, _ in plan}
    for r in range(1, opts.rounds + 1):
        for label, mode, n in plan:
            args = [str(n)]
            if mode.startswith("genq-redis"):
                mode, args = "genq-redis", [str(n), mode.removeprefix("genq-redis-")]
            res = h.run_child(script, mode, args)
            results[label].append(res)
            extra = ""
            if "cpu_us_per_chunk" in res:
                cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(res["cpu_us_per_chunk"].items()))
                extra = f"; persisted {res['persisted']:,}; CPU us/chunk: {cpu}"
            print(f"  round {r}/{opts.rounds}  {label:<22} {res['chunks_per_s']:>10,.0f} "
                  f"chunks/s   (n={res['n']:,}{extra})", flush=True)

    med = {label: h.median_of(rs, "chunks_per_s") for label, rs in results.items()}
    base = med["naive to_thread/chunk"]
    rows = [[label, f"{v:,.0f}", "no" if "bridge" in label or "naive" in label else "yes",
             f"{v / base:.1f}x", _target(label, v)] for label, v in med.items()]
    print()
    print(h.table(["consumer", "chunks/s (median)", "persisted", "vs to_thread/chunk",
                   "target (SQLite 100k/s, Redis 50k/s)"], rows))


def _target(label: str, rate: float) -> str:
    if label.startswith("genq stream"):
        return "met" if rate >= TARGET else "missed"
    if "Redis" in label:
        return "met" if rate >= REDIS_TARGET else "missed"
    return ""


if __name__ == "__main__":
    if not h.child_main({"genq": genq_child, "genq-redis": genq_redis_child,
                         "redis-worker": redis_worker_child, "bridge": bridge_child,
                         "to_thread": to_thread_child, "executor": executor_child}):
        main()
