"""No-op jobs per second over HTTP, submit to result, one server process.

    .venv/bin/python bench/bench_http_jobs.py           # ~85 s: 3 interleaved rounds
    .venv/bin/python bench/bench_http_jobs.py --quick   # one short round, a smoke test

Each server runs alone in a fresh process on a free loopback port — genq through its
own command, ``genq serve bench/http_apps.py:app --db <fresh SQLite file>`` — and is
loaded by another process (uvloop) for a fixed window after a warm-up; jobs/s = jobs
finished inside the window / window. One "job" is a submit and its result:

* genq: ``POST /api/jobs {"function": "noop", "input": {}}`` then
  ``GET /api/jobs/{id}/result?wait=30`` (a long poll answered once the job is terminal),
  ``noop`` an ``async def`` with ``concurrency=64``. Durable: submit answers after the
  job row and its ``queued`` event are committed, the result after ``started``,
  ``succeeded`` and the final row are. When the server has stopped, the SQLite file is
  checked: every job ``succeeded``, with its 3 events.
* starlette (the upper bound): the same endpoint pair in a minimal Starlette app on the
  same uvicorn (bench/http_apps.py:jobs_peer): submit makes an id and a future and starts
  an asyncio task running the no-op; result awaits the future. Nothing is validated or
  stored.
* gradio: Gradio 6's queue through its HTTP API: ``POST /gradio_api/call/noop`` answers
  an event id, ``GET /gradio_api/call/noop/{event_id}`` streams SSE until ``complete``;
  ``concurrency_limit=64``. The one other job server with an HTTP API that runs here
  with no extra service (Celery+Flower, RQ, arq, SAQ, Dramatiq, procrastinate need
  Redis, RabbitMQ or Postgres). Not durable: its queue is in memory.

Load generators (C concurrent workers, default 64, each with its own connection):

* ``httpx``: an ``httpx.AsyncClient`` per worker (one shared pool of 64 connections
  costs ~12 ms of client CPU per job in httpcore 1.0.9's pool bookkeeping).
* ``genq.map`` (genq only): ``genq.AsyncClient(url).map("noop", [{}] * 1000,
  concurrency=C)`` in a loop: the real client (idempotency key per submit, responses
  parsed into Jobs, one shared httpx pool).
* ``raw``: ``_httpbench.RawHTTP``, HTTP/1.1 on asyncio streams, a few tens of us per
  request: what the server can do when the load generator is not the bottleneck on a
  2-core machine (httpx needs ~0.5 ms of CPU per request here).

Besides jobs/s it prints the CPU each side used per job (server from /proc, load
generator from getrusage) and the share of a core each used in the window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _httpbench as hb

SERVERS = {  # name -> (target, is genq, load generators)
    "genq": ("bench/http_apps.py:app", True, ("httpx", "genq.map", "raw")),
    "starlette": ("bench/http_apps.py:jobs_peer", False, ("httpx", "raw")),
    "gradio": ("bench/http_apps.py:gradio_peer()", False, ("httpx", "raw")),
}
DEFAULT_RUNS = "genq/httpx,genq/genq.map,genq/raw,starlette/httpx,starlette/raw,gradio/httpx"
TARGET = 2000.0
MAP_BATCH = 1000


# -- the load generator (a child process) ------------------------------------------------
async def _load(server: str, loadgen: str, url: str, server_pid: int, concurrency: int,
                warmup: float, window: float) -> dict[str, Any]:
    import httpx

    import genq

    done_at: list[float] = []
    start = time.monotonic()
    measure_from = start + warmup
    measure_to = measure_from + window
    marks: dict[str, float] = {}

    async def ticker() -> None:  # CPU of both processes at the edges of the window
        while "t1" not in marks:
            now = time.monotonic()
            if "t0" not in marks and now >= measure_from:
                marks.update(cpu0=hb.self_cpu(), srv0=hb.proc_cpu(server_pid), t0=now)
            if "t1" not in marks and now >= measure_to:
                marks.update(cpu1=hb.self_cpu(), srv1=hb.proc_cpu(server_pid), t1=now)
            await asyncio.sleep(0.005)

    tick = asyncio.create_task(ticker())
    if loadgen == "genq.map":
        async with genq.AsyncClient(url) as client:
            while time.monotonic() < measure_to:
                batch = await client.map("noop", [{}] * MAP_BATCH, concurrency=concurrency)
                done_at.append(time.monotonic())
                assert len(batch) == MAP_BATCH
        await tick
        # A map returns its results at once: the rate is taken over whole batches, from
        # the end of the last batch before the window to the last end inside it.
        inside = [t for t in done_at if measure_from <= t <= measure_to]
        before = [t for t in done_at if t < measure_from]
        jobs = MAP_BATCH * len(inside)
        span = (inside[-1] - (before[-1] if before else start)) if inside else 0.0
        rate = jobs / span if span > 0 else 0.0
        total = MAP_BATCH * len(done_at)
    else:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"function": "noop", "input": {}}).encode()
        gr = "/ui/gradio_api/call/noop"

        async def worker() -> None:
            if loadgen == "raw":
                raw = hb.RawHTTP(host, int(port))

                async def call(method: str, path: str, data: bytes | None) -> tuple[int, str]:
                    status, content = await raw.request(method, path, data)
                    return status, content.decode()
            else:
                client = httpx.AsyncClient(base_url=url, timeout=60)

                async def call(method: str, path: str, data: bytes | None) -> tuple[int, str]:
                    r = await client.request(method, path, content=data, headers=(
                        {"Content-Type": "application/json"} if data else None))
                    return r.status_code, r.text
            try:
                while time.monotonic() < measure_to:
                    if server == "gradio":
                        status, text = await call("POST", gr, b'{"data":[]}')
                        event_id = json.loads(text)["event_id"]
                        status, text = await call("GET", f"{gr}/{event_id}", None)
                        if status != 200 or "event: complete" not in text:
                            raise RuntimeError(f"gradio: {status} {text[:200]}")
                    else:
                        status, text = await call("POST", "/api/jobs", body)
                        if status != 201:
                            raise RuntimeError(f"submit: {status} {text[:200]}")
                        job_id = json.loads(text)["id"]
                        status, text = await call("GET", f"/api/jobs/{job_id}/result?wait=30",
                                                  None)
                        if status != 200 or json.loads(text)["status"] != "succeeded":
                            raise RuntimeError(f"result: {status} {text[:200]}")
                    done_at.append(time.monotonic())
            finally:
                await (raw.aclose() if loadgen == "raw" else client.aclose())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await tick
        jobs = sum(1 for t in done_at if measure_from <= t < measure_to)
        rate = jobs / window
        total = len(done_at)
    t = marks["t1"] - marks["t0"]
    return {
        "jobs": jobs, "total_jobs": total, "jobs_per_s": rate,
        "client_cpu_us": 1e6 * (marks["cpu1"] - marks["cpu0"]) / max(1, jobs),
        "server_cpu_us": 1e6 * (marks["srv1"] - marks["srv0"]) / max(1, jobs),
        "server_cpu_share": (marks["srv1"] - marks["srv0"]) / t,
        "client_cpu_share": (marks["cpu1"] - marks["cpu0"]) / t,
    }


def load_main(argv: list[str]) -> None:
    import uvloop

    server, loadgen, url, pid, conc, warmup, window = argv
    result = uvloop.run(_load(server, loadgen, url, int(pid), int(conc), float(warmup),
                              float(window)))
    print(json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------
def _check_db(db: Path, at_least: int) -> str:
    conn = sqlite3.connect(db)
    try:
        by_status = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    jobs = sum(by_status.values())
    if by_status.get("succeeded", 0) != jobs or events != 3 * jobs or jobs < at_least:
        raise RuntimeError(f"durability check failed: {by_status}, {events} events")
    return f"{jobs:,} jobs in the file, all succeeded, {events:,} events"


def run_server(name: str, loadgens: list[str], args: argparse.Namespace
               ) -> dict[str, dict[str, Any]]:
    target, genq, _ = SERVERS[name]
    out: dict[str, dict[str, Any]] = {}
    with hb.serve(name, target, genq=genq) as server:
        for loadgen in loadgens:
            r = hb.run_json([__file__, "--child", "load", name, loadgen, server.url,
                             str(server.pid), str(args.concurrency), str(args.warmup),
                             str(args.window)], timeout=args.warmup + args.window + 60)
            r["rss_mib"] = server.rss_kib() / 1024
            out[f"{name} / {loadgen}"] = r
            print(f"  {name + ' / ' + loadgen:<18} {r['jobs_per_s']:7,.0f} jobs/s   server "
                  f"{r['server_cpu_us']:5.0f} us/job ({r['server_cpu_share']:4.0%} of a core)"
                  f"   load generator {r['client_cpu_us']:5.0f} us/job "
                  f"({r['client_cpu_share']:4.0%})", flush=True)
    try:
        if server.db is not None:
            total = sum(r["total_jobs"] for r in out.values())
            print(f"    genq file check: {_check_db(server.db, total)}", flush=True)
    finally:
        server.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help="SERVER/LOADGEN pairs (servers: genq, starlette, gradio; load "
                             "generators: httpx, raw, and genq.map for genq)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="concurrent submit->result workers (default 64)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=2.5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.window = 1, 0.5, 1.5
    pairs = [tuple(r.split("/")) for r in args.runs.split(",") if r]
    servers = list(dict.fromkeys(p[0] for p in pairs))
    hb.raise_nofile()
    machine = h.machine_line()
    print(machine)
    print(f"no-op jobs over HTTP, {args.concurrency} concurrent workers, {args.warmup:g} s "
          f"warm-up + {args.window:g} s window per run, {args.rounds} round(s)")
    results: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}")
        order = servers if rnd % 2 == 0 else servers[::-1]
        for name in order:
            loadgens = [g for g in SERVERS[name][2] if (name, g) in pairs]
            if rnd % 2:
                loadgens.reverse()
            for key, r in run_server(name, loadgens, args).items():
                results.setdefault(key, []).append(r)
    med = {k: hb.median([r["jobs_per_s"] for r in rs]) for k, rs in results.items()}
    rows = []
    for key, rs in results.items():
        loadgen = key.split(" / ")[1]
        peers = [p for p in results if p != key and p.split(" / ")[1] == loadgen
                 and med[p] > 0]
        if loadgen == "genq.map":
            peers = [p for p in results if p.endswith(" / httpx") and med[p] > 0]
        ratios = "  ".join(f"{med[key] / med[p]:.2f}x {p.replace(' / ', '/')}" for p in peers)
        rows.append([key, f"{med[key]:,.0f}",
                     f"{hb.median([r['server_cpu_us'] for r in rs]):.0f}",
                     f"{hb.median([r['client_cpu_us'] for r in rs]):.0f}",
                     f"{max(r['rss_mib'] for r in rs):.0f}", ratios or "-"])
    print()
    print(h.table(["server / load generator", "jobs/s", "server us/job", "load us/job",
                   "server RSS MiB", "ratio vs peers, same load generator (medians)"], rows))
    for key in ("genq / httpx", "genq / genq.map", "genq / raw"):
        if key in med:
            print(f"target >= {TARGET:,.0f} jobs/s, {key}: {med[key]:,.0f} -> "
                  f"{'met' if med[key] >= TARGET else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "bench_http_jobs", "machine": machine, "rounds": args.rounds,
            "concurrency": args.concurrency, "target_jobs_per_s": TARGET,
            "median_jobs_per_s": med, "runs": results}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child" and sys.argv[2] == "load":
        load_main(sys.argv[3:])
    else:
        main()
