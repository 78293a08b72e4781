"""Event-loop lag while 16 blocking sync generators stream tokens at once: genq against
the naive pattern of iterating the generators directly in async tasks.

    .venv/bin/python bench/bench_loop_lag.py            # ~25 s: 2 interleaved rounds
    .venv/bin/python bench/bench_loop_lag.py --quick    # one short round, a smoke test

The producer: ``def tokens(n)`` sleeps 1-5 ms (uniformly at random; ``time.sleep``, as a
model's forward pass blocks) before each of its tokens -- a blocking sync generator like
transformers' TextIteratorStreamer.

A probe task on the *same* loop does ``await asyncio.sleep(0.001)`` in a loop and records
how late it wakes (its oversleep: elapsed - 1 ms); that is the delay every other coroutine
on that loop -- an HTTP handler, an SSE heartbeat -- would see. The three cases run for
the same window (``--seconds``):

* idle: the probe alone, the noise floor of the machine and of asyncio's timer.
* genq: ``async with app.local(db) as client`` (the async client, so the engine, its
  worker and the probe share one loop); 16 tasks each ``async for tok in
  client.stream("tokens", n=...)``, every token persisted in the event log.
* naive: 16 tasks each doing ``for tok in tokens(n): ...; await asyncio.sleep(0)`` -- the
  sync generator iterated on the loop, with an await per token (as a handler that sends
  each token would have), so the loop runs between tokens but is blocked inside next().
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

STREAMS = 16
PROBE_INTERVAL = 0.001
TARGET_P99_MS = 5.0


def tokens(n: int) -> Iterator[str]:
    for i in range(n):
        time.sleep(random.uniform(0.001, 0.005))
        yield f"tok{i} "


class Probe:
    """Sleeps PROBE_INTERVAL in a loop and records each oversleep, in ms."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._stop = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop:
            t0 = loop.time()
            await asyncio.sleep(PROBE_INTERVAL)
            self.lags.append((loop.time() - t0 - PROBE_INTERVAL) * 1e3)

    def stop(self) -> None:
        self._stop = True


def _summary(lags: list[float], tokens_received: int, seconds: float) -> h.ChildResult:
    ordered = sorted(lags)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {"p50_ms": pct(50), "p99_ms": pct(99), "max_ms": ordered[-1],
            "mean_ms": statistics.fmean(ordered), "samples": len(ordered),
            "tokens": tokens_received, "tokens_per_s": tokens_received / seconds}


async def _run_with_probe(work: asyncio.Future[int] | None, seconds: float
                          ) -> tuple[list[float], int, float]:
    probe = Probe()
    probe_task = asyncio.ensure_future(probe.run())
    t0 = time.perf_counter()
    if work is None:
        await asyncio.sleep(seconds)
        received = 0
    else:
        received = await work
    elapsed = time.perf_counter() - t0
    probe.stop()
    await probe_task
    return probe.lags, received, elapsed


def idle_child(args: list[str]) -> h.ChildResult:
    seconds = float(args[0])
    lags, received, elapsed = asyncio.run(_run_with_probe(None, seconds))
    return _summary(lags, received, elapsed)


def genq_child(args: list[str]) -> h.ChildResult:
    import genq

    seconds = float(args[0])
    n = int(seconds / 0.003)  # tokens per stream: ~3 ms each on average
    app = genq.App()
    app.function(name="tokens", concurrency=STREAMS)(tokens)
    db = h.scratch("genq-bench-") / "genq.sqlite3"

    async def consume(client: genq.AsyncClient) -> int:
        count = 0
        async for _ in client.stream("tokens", n=n):
            count += 1
        return count

    async def main() -> tuple[list[float], int, float]:
        async with app.local(db) as client:
            async def all_streams() -> int:
                counts = await asyncio.gather(*(consume(client) for _ in range(STREAMS)))
                return sum(counts)

            return await _run_with_probe(asyncio.ensure_future(all_streams()), seconds)

    lags, received, elapsed = asyncio.run(main())
    with sqlite3.connect(db) as conn:
        persisted = conn.execute("SELECT count(*) FROM events WHERE type='output'").fetchone()[0]
    assert received == STREAMS * n and persisted == received, (received, persisted)
    return {**_summary(lags, received, elapsed), "persisted": persisted}


def naive_child(args: list[str]) -> h.ChildResult:
    seconds = float(args[0])

    async def consume(deadline: float) -> int:
        count = 0
        for _ in tokens(10**9):
            count += 1
            await asyncio.sleep(0)  # e.g. sending the token to a client
            if time.perf_counter() >= deadline:
                break
        return count

    async def main() -> tuple[list[float], int, float]:
        deadline = time.perf_counter() + seconds

        async def all_streams() -> int:
            return sum(await asyncio.gather(*(consume(deadline) for _ in range(STREAMS))))

        return await _run_with_probe(asyncio.ensure_future(all_streams()), seconds)

    lags, received, elapsed = asyncio.run(main())
    return _summary(lags, received, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="window per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    opts = parser.parse_args()
    if opts.quick:
        opts.seconds, opts.rounds = 1.0, 1

    script = os.path.abspath(__file__)
    print(f"bench_loop_lag: loop lag of a 1 ms sleep probe while {STREAMS} blocking sync "
          "generators (1-5 ms per token) stream")
    print(h.machine_line())
    plan = [("idle (probe only)", "idle"), ("genq (16 streams)", "genq"),
            ("naive (16 streams)", "naive")]
    results: dict[str, list[h.ChildResult]] = {label: [] for label, _ in plan}
    for r in range(1, opts.rounds + 1):
        for label, mode in plan:
            res = h.run_child(script, mode, [str(opts.seconds)])
            results[label].append(res)
            print(f"  round {r}/{opts.rounds}  {label:<20} lag p50 {res['p50_ms']:7.2f} ms  "
                  f"p99 {res['p99_ms']:7.2f} ms  max {res['max_ms']:7.2f} ms  "
                  f"({res['samples']:,} probes; {res['tokens_per_s']:,.0f} tokens/s)", flush=True)

    rows = []
    for label, rs in results.items():
        p99 = statistics.median(r["p99_ms"] for r in rs)
        rows.append([label, f"{statistics.median(r['p50_ms'] for r in rs):.2f}", f"{p99:.2f}",
                     f"{max(r['max_ms'] for r in rs):.2f}",
                     f"{statistics.median(r['tokens_per_s'] for r in rs):,.0f}",
                     ("yes" if p99 < TARGET_P99_MS else "no") if label.startswith("genq")
                     else ""])
    print()
    print(h.table(["case", "p50 ms", "p99 ms", "max ms", "tokens/s", "p99 < 5 ms"], rows))
    print("(p50/p99: median over rounds; max: worst over rounds)")


if __name__ == "__main__":
    if not h.child_main({"idle": idle_child, "genq": genq_child, "naive": naive_child}):
        main()
