"""Liveness of a server whose streaming function blocks the event loop: genq against
Gradio 6, side by side, with the same ``async def`` generator.

    .venv/bin/python bench/bench_blocking_async.py              # ~2 min: 2 rounds x 4 systems
    .venv/bin/python bench/bench_blocking_async.py --quick      # one short round

The function is the streaming-chat mistake: ``mistake_stream`` (bench/http_apps.py), an
``async def`` generator iterating a sync generator that blocks ``--block`` s (0.2) per
token. ``--clients`` (4) clients stream it over and over, each a stream of ``--tokens``
(15) tokens, for ``--seconds`` (20); meanwhile a probe GETs ``/healthz`` every 0.1 s and
records how long each answer took: what a load balancer's health check, a status page or
any other request would wait. Reported per system: /healthz median, p95 and max, and the
tokens the clients received per second.

Systems, each served alone in a fresh process on a free loopback port, interleaved:

* genq: ``genq serve bench/http_apps.py:app`` with the function registered as is
  (``concurrency=4``): once a step is seen to block, the generator's steps take turns
  with the rest of the loop (genq.loopshare).
* genq isolate: the same function with ``@app.function(isolate=True)``: on an event
  loop of its own, in a thread.
* gradio: Gradio 6's queue, ``gr.api(mistake_stream)`` as a user would write it (Gradio's
  default concurrency limit, 1 per event), followed over its HTTP API (``POST
  /ui/gradio_api/call/mistake``, then the SSE stream of the event).
* gradio c=4: the same with ``concurrency_limit=4``, the concurrency genq's rows have.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _httpbench as hb

GENQ_TARGET = "bench/http_apps.py:app"
GRADIO_TARGET = "bench/http_apps.py:gradio_mistake_peer"


@dataclass(frozen=True)
class System:
    name: str
    target: str
    genq: bool
    function: str


SYSTEMS = [
    System("genq", GENQ_TARGET, True, "mistake"),
    System("genq isolate", GENQ_TARGET, True, "mistake_isolated"),
    System("gradio", GRADIO_TARGET, False, "mistake"),
    System("gradio c=4", GRADIO_TARGET, False, "mistake4"),
]


@dataclass
class Result:
    system: str
    health_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0


async def stream_once(http: httpx.AsyncClient, system: System, tokens: int,
                      block: float, result: Result, deadline: float) -> None:
    """One stream from submit to its end (or the deadline), counting tokens as they
    arrive."""
    if system.genq:
        answer = await http.post("/api/jobs", json={
            "function": system.function, "input": {"n": tokens, "block": block}})
        answer.raise_for_status()
        path, done = f"/api/jobs/{answer.json()['id']}/events", "event: succeeded"
    else:
        answer = await http.post(f"/ui/gradio_api/call/{system.function}",
                                 json={"data": [tokens, block]})
        answer.raise_for_status()
        path = f"/ui/gradio_api/call/{system.function}/{answer.json()['event_id']}"
        done = "event: complete"
    token_line = "event: output" if system.genq else "event: generating"
    async with http.stream("GET", path) as response:
        async for line in response.aiter_lines():
            if time.monotonic() >= deadline:
                break
            if line.startswith(token_line):
                result.tokens += 1
            elif line.startswith(done):
                break


async def measure(system: System, url: str, args: argparse.Namespace) -> Result:
    result = Result(system.name)
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            while time.monotonic() < deadline:
                await stream_once(http, system, args.tokens, args.block, result, deadline)

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:
            await asyncio.sleep(1.0)  # the streams are under way
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                (await http.get("/healthz")).raise_for_status()
                result.health_ms.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.1)

    await asyncio.gather(probe(), *(client() for _ in range(args.clients)))
    result.seconds = args.seconds
    return result


def run_round(args: argparse.Namespace, order: list[System]) -> list[Result]:
    results = []
    for system in order:
        with hb.serve(system.name.replace(" ", "-"), system.target, genq=system.genq,
                      startup_timeout=120) as server:
            results.append(asyncio.run(measure(system, server.url, args)))
        server.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=15)
    parser.add_argument("--block", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--systems", help="comma-separated names to run (default: all)")
    args = parser.parse_args()
    systems = [s for s in SYSTEMS if args.systems is None
               or s.name in args.systems.split(",")]
    if args.quick:
        args.seconds, args.rounds = 8.0, 1
    print(h.machine_line())
    print(f"{args.clients} clients streaming {args.tokens} tokens of {args.block} s each, "
          f"{args.seconds:g} s per system per round, {args.rounds} round(s)\n")
    merged: dict[str, Result] = {s.name: Result(s.name) for s in systems}
    for round_no in range(args.rounds):
        order = systems if round_no % 2 == 0 else systems[::-1]
        for r in run_round(args, order):
            total = merged[r.system]
            total.health_ms += r.health_ms
            total.tokens += r.tokens
            total.seconds += r.seconds
    rows, out = [], {}
    gradio = merged.get("gradio")
    gradio_median = statistics.median(gradio.health_ms) if gradio else float("nan")
    for name, r in merged.items():
        lat = sorted(r.health_ms)
        med = statistics.median(lat)
        figures = {"healthz_median_ms": med, "healthz_p95_ms": hb.percentile(lat, 95),
                   "healthz_max_ms": lat[-1], "probes": len(lat),
                   "tokens_per_s": r.tokens / r.seconds,
                   "median_vs_gradio": med / gradio_median}
        out[name] = figures
        rows.append([name, f"{med:.0f}", f"{figures['healthz_p95_ms']:.0f}",
                     f"{lat[-1]:.0f}", f"{figures['tokens_per_s']:.1f}",
                     f"{figures['median_vs_gradio']:.2f}"])
    print(h.table(["system", "/healthz p50 ms", "p95 ms", "max ms", "tokens/s",
                   "p50 / gradio's"], rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
