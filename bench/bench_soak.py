"""Does ``genq serve`` hold its memory over many short jobs? RSS every 10,000 jobs.

``--jobs`` no-op jobs (``bench/memory_apps.py:noop``) go through a real ``genq serve``
(SQLite, in-process workers) over HTTP: ``genq.AsyncClient.map`` submits each with an
Idempotency-Key and long-polls its result, ``--concurrency`` at a time, as a busy front
end sees them. After every ``--every`` finished jobs the server's resident memory is
read from /proc. Printed: the series, and the slope (MiB per 1,000 jobs, least squares)
after the warm-up (the first ``--warmup`` jobs), which is ~0 for a server whose memory
levels off and positive for one that keeps something per finished job.

``--trace`` runs the server under tracemalloc and diffs snapshots taken at the end of
the warm-up and at the end: the lines of genq that hold the growth.

    .venv/bin/python bench/bench_soak.py --jobs 100000
    .venv/bin/python bench/bench_soak.py --jobs 60000 --trace
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import _harness as h  # noqa: E402
import _httpbench as hb  # noqa: E402

import genq  # noqa: E402

TARGET = "bench/memory_apps.py:app"


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MiB per 1,000 jobs."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return 1000 * cov / var if var else 0.0


def snapshot(pid: int, directory: Path, index: int) -> Path:
    os.kill(pid, signal.SIGUSR1)
    path = directory / f"snapshot-{index}"
    deadline = time.monotonic() + 60
    while not path.exists() or (time.monotonic() < deadline and _growing(path)):
        time.sleep(0.5)
    return path


def _growing(path: Path) -> bool:
    size = path.stat().st_size
    time.sleep(0.5)
    return path.stat().st_size != size


async def soak(url: str, pid: int, args: argparse.Namespace,
               trace: Path | None) -> list[tuple[int, float, float]]:
    series = [(0, hb.proc_rss_kib(pid) / 1024, 0.0)]
    started = time.monotonic()
    async with genq.AsyncClient(url) as client:
        done = 0
        while done < args.jobs:
            batch = min(args.every, args.jobs - done)
            await client.map("noop", [{}] * batch, concurrency=args.concurrency)
            done += batch
            series.append((done, hb.proc_rss_kib(pid) / 1024, time.monotonic() - started))
            print(f"  {done:>8,} jobs  {series[-1][1]:7.1f} MiB  {series[-1][2]:6.0f} s",
                  flush=True)
            if trace is not None and done == args.warmup:
                snapshot(pid, trace, 1)
    if trace is not None:
        snapshot(pid, trace, 2)
    return series


def report_trace(directory: Path) -> None:
    first = tracemalloc.Snapshot.load(str(directory / "snapshot-1"))
    last = tracemalloc.Snapshot.load(str(directory / "snapshot-2"))
    print("tracemalloc: the biggest growth between the two snapshots, by line")
    for stat in last.compare_to(first, "lineno")[:15]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8d} blocks  "
              f"{stat.traceback[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--trace", action="store_true", help="diff tracemalloc snapshots")
    args = parser.parse_args()
    print(h.machine_line())
    trace = Path(tempfile.mkdtemp(prefix="genq-soak-trace-")) if args.trace else None
    env = {} if trace is None else {"GENQ_BENCH_TRACEMALLOC": str(trace)}
    with hb.serve("soak", TARGET, genq=True, extra_env=env) as server:
        series = asyncio.run(soak(server.url, server.pid, args, trace))
    after = [(jobs, rss) for jobs, rss, _ in series if jobs >= args.warmup]
    took = series[-1][2]
    print(f"{series[-1][0]:,} jobs in {took:.0f} s ({series[-1][0] / took:,.0f}/s); "
          f"RSS {series[0][1]:.1f} MiB at start, {series[-1][1]:.1f} MiB at the end")
    if len(after) >= 2:
        print(f"slope after {args.warmup:,} jobs: {slope(after):+.3f} MiB per 1,000 jobs "
              f"({after[0][1]:.1f} -> {after[-1][1]:.1f} MiB)")
    if trace is not None:
        report_trace(trace)


if __name__ == "__main__":
    main()
