"""The cost of speaking OpenAI: ``/v1/chat/completions`` streaming against genq's native
SSE stream of the same job function, 100 concurrent clients, in the same run.

    .venv/bin/python bench/bench_openai_stream.py           # 3 interleaved rounds
    .venv/bin/python bench/bench_openai_stream.py --quick   # one short round

The method of bench_http_stream.py (and Gradio PR #7670's: many concurrent streams,
latency from each chunk's creation to its arrival): one ``genq serve
bench/http_apps.py:app`` process per system and round, on a fresh SQLite file, runs the
``ticks`` async generator (one chunk every ``interval`` s, each carrying the
``time.time()`` it was yielded at). The followers, 100 in one uvloop client process,
read with httpx-sse:

* native: ``POST /api/jobs`` then ``GET /api/jobs/{id}/events`` (genq's SSE events);
* openai: ``POST /v1/chat/completions`` with ``stream: true`` and the same input as the
  last message's JSON (the ``ticks`` chat model of bench/http_apps.py): OpenAI chunks,
  ``data: [DONE]``.

Reported per system: latency p50 / p99, the server's CPU share of a core while the
chunks flow and its CPU time per chunk delivered (the fair cost: a faster stream
packs the same work into less wall time), and the ratios openai / native (the
overhead; goal <= 1.1x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _httpbench as hb

TARGET = "bench/http_apps.py:app"
SYSTEMS = ["native", "openai"]
START_DELAY = 1.0
GOAL = 1.1


async def _follow_all(system: str, url: str, server_pid: int, streams: int, n: int,
                      interval: float) -> dict[str, Any]:
    import httpx
    from httpx_sse import aconnect_sse

    latencies: list[float] = []
    problems: list[str] = []
    marks: dict[str, float] = {}

    def mark(key: str) -> None:
        if key not in marks:
            marks[key] = time.time()
            marks[f"srv_{key}"] = hb.proc_cpu(server_pid)

    def inputs() -> dict[str, Any]:
        return {"n": n, "interval": interval,
                "delay": START_DELAY + random.uniform(0, interval)}

    def arrived(sent: str) -> None:
        now = time.time()
        mark("first")
        latencies.append(now - float(sent))

    async def native(client: httpx.AsyncClient) -> int:
        r = await client.post("/api/jobs", json={"function": "ticks", "input": inputs()})
        job_id, chunks = r.json()["id"], 0
        async with aconnect_sse(client, "GET", f"/api/jobs/{job_id}/events") as source:
            async for sse in source.aiter_sse():
                if sse.event == "output":
                    arrived(json.loads(sse.data)["data"]["chunk"])
                    chunks += 1
                if sse.event in ("succeeded", "failed", "cancelled", "expired"):
                    break
        return chunks

    async def openai(client: httpx.AsyncClient) -> int:
        body = {"model": "ticks", "stream": True,
                "messages": [{"role": "user", "content": json.dumps(inputs())}]}
        chunks = 0
        async with aconnect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
            async for sse in source.aiter_sse():
                if sse.data == "[DONE]":
                    break
                content = json.loads(sse.data)["choices"][0]["delta"].get("content")
                if content:
                    arrived(content)
                    chunks += 1
        return chunks

    async def one() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            chunks = await (native(client) if system == "native" else openai(client))
        if chunks != n:
            problems.append(f"{chunks} chunks of {n}")

    await asyncio.gather(*(one() for _ in range(streams)))
    mark("last")
    ms = sorted(x * 1000 for x in latencies)
    wall = marks["last"] - marks["first"]
    return {"chunks": len(ms), "expected": streams * n, "problems": problems[:5],
            "p50_ms": hb.percentile(ms, 50), "p99_ms": hb.percentile(ms, 99),
            "server_cpu_share": (marks["srv_last"] - marks["srv_first"]) / wall,
            # CPU per chunk rather than per second: a system that delivers sooner
            # packs the same work into less wall time, and its share looks higher.
            "server_cpu_us_per_chunk": (marks["srv_last"] - marks["srv_first"])
            / max(1, len(ms)) * 1e6}


def follow_main(argv: list[str]) -> None:
    import uvloop

    system, url, pid, streams, n, interval = argv
    result = uvloop.run(_follow_all(system, url, int(pid), int(streams), int(n),
                                    float(interval)))
    print(json.dumps(result), flush=True)


def run_one(system: str, args: argparse.Namespace) -> dict[str, Any]:
    with hb.serve(f"openai-bench-{system}", TARGET, genq=True) as server:
        result = hb.run_json([__file__, "--child", "follow", system, server.url,
                              str(server.pid), str(args.streams), str(args.n),
                              str(args.interval)],
                             timeout=START_DELAY + args.n * args.interval + 60)
    server.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--n", type=int, default=300, help="chunks per stream")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds per chunk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.n = 1, 150
    hb.raise_nofile()
    print(h.machine_line())
    print(f"{args.streams} concurrent streams x {args.n} chunks, one per "
          f"{args.interval * 1000:g} ms, {args.rounds} round(s), systems interleaved")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    for rnd in range(args.rounds):
        for system in (SYSTEMS if rnd % 2 == 0 else SYSTEMS[::-1]):
            r = run_one(system, args)
            results[system].append(r)
            ok = "ok" if r["chunks"] == r["expected"] and not r["problems"] else \
                f"PROBLEMS {r['chunks']}/{r['expected']} {r['problems']}"
            print(f"  round {rnd + 1} {system:<7} p50 {r['p50_ms']:6.2f}  p99 "
                  f"{r['p99_ms']:6.2f} ms  server CPU {r['server_cpu_share']:4.0%} "
                  f"({r['server_cpu_us_per_chunk']:.0f} us/chunk)  {ok}",
                  flush=True)
    keys = ("p50_ms", "p99_ms", "server_cpu_share", "server_cpu_us_per_chunk")
    medians = {s: {k: hb.median([r[k] for r in rs]) for k in keys}
               for s, rs in results.items()}
    rows = [[s, f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", f"{m['server_cpu_share']:.0%}",
             f"{m['server_cpu_us_per_chunk']:.0f}"] for s, m in medians.items()]
    print()
    print(h.table(["stream", "p50 ms", "p99 ms", "server CPU", "server CPU us/chunk"], rows))
    native, openai = medians["native"], medians["openai"]
    for key, what in (("server_cpu_us_per_chunk", "server CPU per chunk"),
                      ("p99_ms", "p99 latency"), ("p50_ms", "p50 latency")):
        ratio = openai[key] / native[key]
        print(f"openai / native {what}: {ratio:.2f}x (goal <= {GOAL}x: "
              f"{'met' if ratio <= GOAL else 'NOT met'})")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child" and sys.argv[2] == "follow":
        follow_main(sys.argv[3:])
    else:
        main()
