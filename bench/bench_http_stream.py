"""Live streams over SSE: 100 concurrent jobs, each yielding 100 chunks/s for 5 s.

    .venv/bin/python bench/bench_http_stream.py           # ~80 s: 3 interleaved rounds
    .venv/bin/python bench/bench_http_stream.py --quick   # one short round

Each chunk carries the ``time.time()`` at which the job yielded it; the client records
the time it parsed the chunk off the SSE stream, and latency = receive time - yield time
(server and client share the machine's clock). The server runs alone in its own process
(``genq serve bench/http_apps.py:app --db <fresh file>``); the 100 followers share one
client process (uvloop). Every job waits 1 s plus a random fraction of the interval
before its first chunk, so the followers are connected before it starts and the 100
schedules are not in phase. Systems:

* genq, ``async def`` generator (``ticks``) followed with httpx-sse
  (``aconnect_sse(GET /api/jobs/{id}/events)``, one httpx client per stream). Every chunk
  is an ``output`` event committed to the job's SQLite log before it is sent.
* genq, the same followed with ``genq.AsyncClient``: ``job.events()``, the real client
  (resume bookkeeping, events parsed into ``Event``).
* genq on Redis, across processes: the ``ticks`` generator runs in a ``genq worker``
  process, the followers connect to a ``genq serve --no-workers`` front end, and every
  chunk goes worker -> Redis Stream (APPEND script) -> the front end's XREAD -> SSE: the
  path of a cluster. A private redis-server with AOF ``everysec``; followed with httpx-sse.
* (``--systems`` only) genq, the first again with the server's cyclic-GC thresholds raised
  to 50000,20,20 (``gc.set_threshold``, through GENQ_BENCH_GC_THRESHOLD in
  bench/http_apps.py). The default rows print the server's GC pauses; at 100 streams a run
  has about one full collection of ~30 ms, so GC is not what the tail is made of here.
* (``--systems`` only) genq, a sync generator (``ticks_sync``: ``time.sleep`` between
  chunks, run in a worker thread) followed with httpx-sse.
* sse-starlette + asyncio.Queue (the peer): ``POST /api/jobs`` starts an asyncio task
  putting the chunks into an in-memory queue; ``GET /api/jobs/{id}/events`` is a plain
  ``EventSourceResponse`` reading it. No log, no durability, no resume. Same uvicorn.

Checks: every follower receives all its chunks, in order, each once (event ids
contiguous). Reported: latency p50 / p99 / p99.9 / max, chunks/s delivered, and the CPU
share of a core used by the server and by the client process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _httpbench as hb

TUNED_GC = "50000,20,20"
REDIS = "genq on Redis: worker -> front end / httpx-sse"
SYSTEMS = {  # name -> (server target, genq?, function, client, server GC thresholds)
    "genq async-gen / httpx-sse": ("bench/http_apps.py:app", True, "ticks", "httpx-sse", ""),
    "genq async-gen / genq.AsyncClient": ("bench/http_apps.py:app", True, "ticks", "genq", ""),
    "genq async-gen tuned-GC / httpx-sse": ("bench/http_apps.py:app", True, "ticks",
                                             "httpx-sse", TUNED_GC),
    "genq sync-gen / httpx-sse": ("bench/http_apps.py:app", True, "ticks_sync", "httpx-sse",
                                  ""),
    "sse-starlette+Queue / httpx-sse": ("bench/http_apps.py:stream_peer", False, "ticks",
                                        "httpx-sse", ""),
    REDIS: ("bench/http_apps.py:app", True, "ticks", "httpx-sse", ""),
}
DEFAULT = ["genq async-gen / httpx-sse", "genq async-gen / genq.AsyncClient", REDIS,
           "sse-starlette+Queue / httpx-sse"]
TARGET_P99_MS = 10.0
START_DELAY = 1.0


# -- the followers (a child process) -----------------------------------------------------
async def _follow_all(function: str, client_kind: str, url: str, server_pid: int,
                      streams: int, n: int, interval: float) -> dict[str, Any]:
    import httpx
    from httpx_sse import aconnect_sse

    import genq
    from genq.models import EventType

    latencies: list[float] = []
    received: list[float] = []
    problems: list[str] = []
    marks: dict[str, float] = {}

    def mark(key: str) -> None:
        if key not in marks:
            marks[key] = time.time()
            marks[f"cpu_{key}"] = hb.self_cpu()
            marks[f"srv_{key}"] = hb.proc_cpu(server_pid)

    def inputs() -> dict[str, Any]:
        return {"n": n, "interval": interval,
                "delay": START_DELAY + random.uniform(0, interval)}

    async def follow_httpx_sse() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            r = await client.post("/api/jobs", json={"function": function, "input": inputs()})
            if r.status_code != 201:
                raise RuntimeError(f"submit: {r.status_code} {r.text[:200]}")
            job_id = r.json()["id"]
            last_id, chunks = 0, 0
            async with aconnect_sse(client, "GET", f"/api/jobs/{job_id}/events") as source:
                async for sse in source.aiter_sse():
                    if sse.event == "output":
                        now = time.time()
                        chunk = json.loads(sse.data)["data"]["chunk"]
                        mark("first")
                        latencies.append(now - float(chunk))
                        received.append(now)
                        chunks += 1
                    if sse.id:
                        if int(sse.id) != last_id + 1:
                            problems.append(f"{job_id}: id {sse.id} after {last_id}")
                        last_id = int(sse.id)
                    if sse.event in ("succeeded", "failed", "cancelled", "expired"):
                        break
            if chunks != n:
                problems.append(f"{job_id}: {chunks} chunks of {n}")

    async def follow_genq(client: genq.AsyncClient) -> None:
        job = await client.submit(function, inputs())
        last_id, chunks = 0, 0
        async for event in job.events():
            if event.type is EventType.OUTPUT:
                now = time.time()
                mark("first")
                latencies.append(now - float(event.data["chunk"]))
                received.append(now)
                chunks += 1
            if event.id != last_id + 1:
                problems.append(f"{job.id}: id {event.id} after {last_id}")
            last_id = event.id
        if chunks != n:
            problems.append(f"{job.id}: {chunks} chunks of {n}")

    if client_kind == "genq":
        async with genq.AsyncClient(url) as client:
            await asyncio.gather(*(follow_genq(client) for _ in range(streams)))
    else:
        await asyncio.gather(*(follow_httpx_sse() for _ in range(streams)))
    mark("last")
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    span = max(received) - min(received) if received else 0.0
    wall = marks["last"] - marks["first"]
    return {
        "chunks": len(latencies), "expected": streams * n, "problems": problems[:10],
        "p50_ms": hb.percentile(ms, 50), "p99_ms": hb.percentile(ms, 99),
        "p999_ms": hb.percentile(ms, 99.9), "max_ms": ms[-1] if ms else float("nan"),
        "chunks_per_s": len(latencies) / span if span else 0.0,
        "server_cpu_share": (marks["srv_last"] - marks["srv_first"]) / wall,
        "client_cpu_share": (marks["cpu_last"] - marks["cpu_first"]) / wall,
        "over_10ms": sum(1 for x in ms if x > 10.0),
    }


def follow_main(argv: list[str]) -> None:
    import uvloop

    function, client_kind, url, pid, streams, n, interval = argv
    result = uvloop.run(_follow_all(function, client_kind, url, int(pid), int(streams),
                                    int(n), float(interval)))
    print(json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------
def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    target, genq, function, client_kind, gc_threshold = SYSTEMS[name]
    env = {"GENQ_BENCH_GC_THRESHOLD": gc_threshold} if gc_threshold else {}
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(hb.redis_cluster(target)) if name == REDIS else None
        server = stack.enter_context(hb.serve(name.split()[0], target, genq=genq,
                                              extra_env=env, store=store))
        duration = args.n * args.interval
        r = hb.run_json([__file__, "--child", "follow", function, client_kind, server.url,
                         str(server.pid), str(args.streams), str(args.n), str(args.interval)],
                        timeout=START_DELAY + duration + 60)
        r["rss_mib"] = server.rss_kib() / 1024
    r.update(hb.gc_pauses(server.gc_log))
    server.cleanup()
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(DEFAULT),
                        help="comma-separated, from: " + ", ".join(SYSTEMS))
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--n", type=int, default=500, help="chunks per stream")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds per chunk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.n = 1, 150
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    hb.raise_nofile()
    machine = h.machine_line()
    print(machine)
    print(f"{args.streams} concurrent streams x {args.n} chunks, one per {args.interval * 1000:g}"
          f" ms ({args.streams / args.interval:,.0f} chunks/s offered), {args.rounds} round(s)")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for rnd in range(args.rounds):
        for name in (systems if rnd % 2 == 0 else systems[::-1]):
            r = run_one(name, args)
            results[name].append(r)
            status = "ok" if r["chunks"] == r["expected"] and not r["problems"] else (
                f"PROBLEMS {r['chunks']}/{r['expected']} {r['problems'][:3]}")
            print(f"  round {rnd + 1} {name:<37} p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f}"
                  f"  p99.9 {r['p999_ms']:6.2f}  max {r['max_ms']:7.2f} ms  "
                  f"{r['chunks_per_s']:7,.0f} chunks/s  server {r['server_cpu_share']:4.0%}"
                  f"  client {r['client_cpu_share']:4.0%}  {status}", flush=True)
            if name.startswith("genq"):
                print(f"      server GC: {r['full_gcs']} full collections, longest "
                      f"{r['longest_full_gc'] * 1000:.0f} ms; all pauses over 5 ms "
                      f"{r['gc_pause_total'] * 1000:.0f} ms", flush=True)
    peer = "sse-starlette+Queue / httpx-sse"
    rows = []
    for name, rs in results.items():
        p99 = hb.median([r["p99_ms"] for r in rs])
        peer_p99 = hb.median([r["p99_ms"] for r in results[peer]]) if peer in results else None
        rows.append([name, f"{hb.median([r['p50_ms'] for r in rs]):.2f}", f"{p99:.2f}",
                     f"{hb.median([r['p999_ms'] for r in rs]):.2f}",
                     f"{max(r['max_ms'] for r in rs):.1f}",
                     f"{hb.median([r['chunks_per_s'] for r in rs]):,.0f}",
                     f"{hb.median([r['server_cpu_share'] for r in rs]):.0%}",
                     f"{hb.median([r['client_cpu_share'] for r in rs]):.0%}",
                     f"{max(r['rss_mib'] for r in rs):.0f}",
                     "-" if peer_p99 is None or name == peer else f"{p99 / peer_p99:.2f}x"])
    print()
    print(h.table(["system / follower", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "chunks/s",
                   "server CPU", "client CPU", "server RSS MiB", "p99 vs peer"], rows))
    for name, rs in results.items():
        if name.startswith("genq"):
            p99 = hb.median([r["p99_ms"] for r in rs])
            print(f"target p99 < {TARGET_P99_MS:g} ms, {name}: {p99:.2f} ms -> "
                  f"{'met' if p99 < TARGET_P99_MS else 'NOT met'}")
    if args.json:
        keys = ("p50_ms", "p99_ms", "p999_ms", "chunks_per_s", "server_cpu_share")
        medians = {name: {k: hb.median([r[k] for r in rs]) for k in keys}
                   for name, rs in results.items() if rs}
        for name, m in medians.items():
            m["ok"] = all(r["chunks"] == r["expected"] and not r["problems"]
                          for r in results[name])
        args.json.write_text(json.dumps({
            "benchmark": "bench_http_stream", "machine": machine, "streams": args.streams,
            "n": args.n, "interval_s": args.interval, "rounds": args.rounds, "peer": peer,
            "medians": medians, "runs": results}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child" and sys.argv[2] == "follow":
        follow_main(sys.argv[3:])
    else:
        main()
