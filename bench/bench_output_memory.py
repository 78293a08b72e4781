"""Peak memory of genq while one job's large output is streamed live, replayed and read.

One job of ``bench/memory_apps.py:chunks`` yields ``--mb`` chunks of 1 MiB of text
(100 MB by default). Against a real ``genq serve`` (SQLite; or, with ``--store redis``,
``genq serve --no-workers`` + one ``genq worker`` on a private ``redis-server``) this
process:

1. *live*: submits the job and follows its SSE stream from the start while it runs;
2. *replay*: follows the finished job's stream again from the start;
3. *view*: ``GET /api/jobs/{id}`` (reports the body's size);
4. *result*: ``genq.AsyncClient.result()`` (reports the result's length, checks it).

Before each phase the peak-RSS mark of every process is reset (``/proc/PID/clear_refs``)
and after it the peak (``VmHWM``) is read: the figures are each process's highest
resident memory during that phase alone. Every event is checked: ids 1, 2, 3... in
order, none missing, ``--mb`` outputs of the right size.

    .venv/bin/python bench/bench_output_memory.py                 # SQLite, 100 MB
    .venv/bin/python bench/bench_output_memory.py --store redis   # the same on Redis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import _harness as h  # noqa: E402
import _httpbench as hb  # noqa: E402
from memory_apps import text_of  # noqa: E402

import genq  # noqa: E402

TARGET = "bench/memory_apps.py:app"
CHUNK = 1 << 20


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


class Peaks:
    """The peak RSS of each process over one phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    @contextlib.contextmanager
    def phase(self, rows: list[list[str]], name: str, note: str = "") -> Iterator[None]:
        for pid in self.pids.values():
            reset_peak(pid)
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        rows.append([name, *(f"{peak_mib(pid):,.0f}" for pid in self.pids.values()),
                     f"{took:.1f}", note])


async def follow_all(client: genq.AsyncClient, job_id: str, n: int) -> int:
    """Every event of the job from the start; checks order and the output chunks."""
    expected, outputs, size = 1, 0, 0
    async for event in client.job(job_id).events():
        if event.id != expected:
            raise AssertionError(f"event {event.id} where {expected} was due")
        expected += 1
        if event.type is genq.EventType.OUTPUT:
            outputs += 1
            size += len(event.data["chunk"])
    if outputs != n or size != n * CHUNK:
        raise AssertionError(f"{outputs} outputs of {size} bytes, not {n} of {n * CHUNK}")
    return expected - 1


async def run(url: str, peaks: Peaks, n: int) -> list[list[str]]:
    rows: list[list[str]] = []
    async with genq.AsyncClient(url, read_timeout=300) as client:
        with peaks.phase(rows, "live"):
            job = await client.submit("chunks", n=n, size=CHUNK)
            events = await follow_all(client, job.id, n)
        with peaks.phase(rows, "replay", f"{events} events"):
            await follow_all(client, job.id, n)
        with peaks.phase(rows, "view"):
            async with httpx.AsyncClient(timeout=300) as http:
                body = (await http.get(f"{url}/api/jobs/{job.id}")).content
        rows[-1][-1] = f"{len(body):,} bytes"
        with peaks.phase(rows, "result"):
            result = await job.result(timeout=300)
        if result != "".join(text_of(CHUNK, i) for i in range(n)):
            raise AssertionError("the result is not the joined chunks")
        rows[-1][-1] = f"{len(result):,} chars"
    return rows


@contextlib.contextmanager
def sqlite_processes() -> Iterator[tuple[str, dict[str, int]]]:
    with hb.serve("memory", TARGET, genq=True) as server:
        yield server.url, {"server": server.pid}


@contextlib.contextmanager
def redis_processes() -> Iterator[tuple[str, dict[str, int]]]:
    from tests.support.redis_server import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="genq-memory-bench-"))
    with RedisServer(tmp / "redis", appendfsync="everysec") as redis:
        assert redis.proc is not None
        with (tmp / "worker.log").open("wb") as out:
            worker = subprocess.Popen([hb.GENQ, "worker", TARGET, "--store", redis.url],
                                      stdout=out, stderr=subprocess.STDOUT, cwd=hb.ROOT)
        try:
            with hb.serve("memory", TARGET, genq=True, store=redis.url) as server:
                yield server.url, {"server": server.pid, "worker": worker.pid,
                                   "redis-server": redis.proc.pid}
        finally:
            hb.stop(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--mb", type=int, default=100, help="1 MiB chunks the job yields")
    args = parser.parse_args()
    print(h.machine_line())
    processes = sqlite_processes() if args.store == "sqlite" else redis_processes()
    with processes as (url, pids):
        start = {name: hb.proc_rss_kib(pid) / 1024 for name, pid in pids.items()}
        rows = asyncio.run(run(url, Peaks(pids), args.mb))
    print(f"{args.mb} MiB of output in 1 MiB chunks, store {args.store}; "
          "peak RSS (MiB) of each process during each phase; at start: "
          + ", ".join(f"{name} {mib:,.0f}" for name, mib in start.items()))
    print(h.table(["phase", *pids, "seconds", "what"], rows))


if __name__ == "__main__":
    main()
