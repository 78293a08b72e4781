"""Streaming at scale: C concurrent clients, each streaming N tokens made at 100 tokens/s.

    .venv/bin/python bench/bench_scale.py                  # C = 1, 25, 100, 250; 3 rounds
    .venv/bin/python bench/bench_scale.py --quick          # C = 1, 25; 50 tokens; 1 round
    .venv/bin/python bench/bench_scale.py --json out.json  # also write the results

The method of Gradio's streaming benchmark (gradio-app/gradio PR #7670): every request
streams N tokens (default 200) from a server-side generator that sleeps 10 ms after each
token, so a request takes about N x 10 ms = 2 s when nothing else is slow; C clients
(1, 25, 100, 250) send one request each, all at once. Per request: seconds from the
request's start (before its submit) to its last token, and to its first token. Reported
per system and C: mean and p95 of the former, p50 and p95 of the latter, and ratios of the
mean and p95 to the floor's at the same C. Every client must receive every token, "0" ..
"N-1", in order, exactly once; a row where one did not is marked FAILED (and the script
exits 1 at the end).

Systems, each served alone in a fresh server process on a free loopback port (a new one
for every measurement), interleaved: for each round, for each C, every system in turn,
the order reversed every other time.

* genq async-gen: ``token_stream`` (bench/http_apps.py), an ``async def`` generator
  registered as ``tokens`` in ``genq serve bench/http_apps.py:app --db <fresh file>``.
  Every token is an ``output`` event committed to the job's SQLite log before it is sent.
* genq sync-gen: ``token_stream_sync``, the same with ``time.sleep``, run by genq in a
  worker thread (``tokens_sync``).
  Both followed over raw SSE with httpx: ``POST /api/jobs`` then ``GET
  /api/jobs/{id}/events``, the frames parsed straight off ``aiter_raw()``.
* gradio / gradio_client: Gradio 6's queue (``gr.api(token_stream)``, no concurrency
  limit, mounted on FastAPI, bench/http_apps.py:gradio_stream_peer()) followed with
  ``gradio_client.Client.submit`` and ``for token in job`` — the documented way. The
  client is synchronous: one ``Client`` (one session, one ``/queue/data`` stream for all
  its jobs) with ``max_workers=C``, and C threads each iterating its job (Job.__next__
  polls its outputs every 1 ms). Its ``async for`` over a job reads an asyncio.Queue
  that the client's threads fill without waking the loop, so it is not used.
* gradio / raw SSE: the same server, over Gradio's single-prediction HTTP API: ``POST
  /gradio_api/call/tokens`` answers an event id, ``GET /gradio_api/call/tokens/{id}`` is
  an SSE stream of ``generating`` events (one per yield, each the full output: no diffs
  on this route) and a ``complete``. Followed like genq's (httpx, raw frames).
* sse-starlette floor: ``POST /api/jobs`` starts an asyncio task running the same
  ``token_stream`` into an ``asyncio.Queue``; ``GET /api/jobs/{id}/events`` is a plain
  ``EventSourceResponse`` reading it (no store, no log, no resume). The same uvicorn
  settings as ``genq serve`` (uvloop, httptools, one process).
* (``--systems`` only) gradio sync-gen / raw SSE: ``token_stream_sync`` in Gradio, whose
  thread pool is 40 threads by default.

The httpx clients of one measurement share one client process (uvloop), one
``httpx.AsyncClient`` per request, all made before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _httpbench as hb

APP = "bench/http_apps.py:app"
GRADIO = "bench/http_apps.py:gradio_stream_peer()"
FLOOR_APP = "bench/http_apps.py:stream_peer"
FLOOR = "sse-starlette floor"
SYSTEMS = {  # name -> (server target, genq?, client kind, function)
    "genq async-gen": (APP, True, "genq", "tokens"),
    "genq sync-gen": (APP, True, "genq", "tokens_sync"),
    "gradio / gradio_client": (GRADIO, False, "gradio_client", "tokens"),
    "gradio / raw SSE": (GRADIO, False, "gradio", "tokens"),
    FLOOR: (FLOOR_APP, False, "genq", "tokens"),
    "gradio sync-gen / raw SSE": (GRADIO, False, "gradio", "tokens_sync"),
}
DEFAULT = ["genq async-gen", "genq sync-gen", "gradio / gradio_client", "gradio / raw SSE",
           FLOOR]
WARMUP_TOKENS = 3  # one untimed request first: a fresh server's first request is slow
TERMINAL = {"succeeded", "failed", "cancelled", "expired", "complete", "error"}


# -- the clients (a child process) -------------------------------------------------------
class Window:
    """CPU of this process and of the server over the timed part (after the warm-up)."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.marks: dict[str, float] = {}

    def start(self) -> None:
        self.marks.update(cpu0=hb.self_cpu(), srv0=hb.proc_cpu(self.pid),
                          t0=time.perf_counter())

    def stop(self) -> None:
        self.marks.update(cpu1=hb.self_cpu(), srv1=hb.proc_cpu(self.pid),
                          t1=time.perf_counter())

    def shares(self) -> dict[str, float]:
        m = self.marks
        wall = m["t1"] - m["t0"]
        return {"wall_s": wall, "client_cpu_share": (m["cpu1"] - m["cpu0"]) / wall,
                "server_cpu_share": (m["srv1"] - m["srv0"]) / wall}


def _frames(buf: bytes) -> tuple[list[dict[str, str]], bytes]:
    """Complete SSE frames in ``buf`` (field -> value) and the rest of it."""
    buf = buf.replace(b"\r\n", b"\n")
    *whole, rest = buf.split(b"\n\n")
    frames = []
    for raw in whole:
        fields: dict[str, str] = {}
        for line in raw.decode().split("\n"):
            name, sep, value = line.partition(":")
            if sep and name:  # a line starting with ":" is a comment (heartbeat)
                fields[name] = value[1:] if value.startswith(" ") else value
        if fields:
            frames.append(fields)
    return frames, rest


class _RawStream(hb.RawHTTP):
    """RawHTTP (a few tens of us per request) plus a GET whose chunked body is read as it
    comes: the light client, so that C=250 measures the server rather than httpx."""

    async def stream(self, path: str) -> AsyncIterator[bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                           "Accept: text/event-stream\r\n\r\n".encode())
        header = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        if not header.startswith("http/1.1 200") or "chunked" not in header:
            raise RuntimeError(f"GET {path}: {header[:200]}")
        while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
            yield (await self._reader.readexactly(size + 2))[:-2]


async def _sse_clients(kind: str, transport: str, url: str, function: str, clients: int,
                       n: int, interval: float, window: Window) -> list[dict[str, Any]]:
    import httpx

    host, port = url.removeprefix("http://").split(":")
    if kind == "gradio":
        submit_path = f"/ui/gradio_api/call/{function}"
        body: dict[str, Any] = {"data": [n, interval]}
        warm: dict[str, Any] = {"data": [WARMUP_TOKENS, interval]}
    else:
        submit_path = "/api/jobs"
        body = {"function": function, "input": {"n": n, "interval": interval}}
        warm = {"function": function, "input": {"n": WARMUP_TOKENS, "interval": interval}}

    class Conn:
        """One client's connection(s): httpx (one AsyncClient each) or _RawStream."""

        def __init__(self) -> None:
            self.httpx = httpx.AsyncClient(
                base_url=url, timeout=600,
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            ) if transport == "httpx" else None
            self.raw = _RawStream(host, int(port)) if transport == "raw" else None

        async def post(self, path: str, payload: dict[str, Any]) -> Any:
            if self.httpx is not None:
                r = await self.httpx.post(path, json=payload)
                status, text = r.status_code, r.text
            else:
                assert self.raw is not None
                status, data = await self.raw.request("POST", path, json.dumps(payload).encode())
                text = data.decode()
            if status not in (200, 201):
                raise RuntimeError(f"submit: {status} {text[:200]}")
            return json.loads(text)

        async def stream(self, path: str) -> AsyncIterator[bytes]:
            if self.httpx is not None:
                async with self.httpx.stream("GET", path) as resp:
                    async for chunk in resp.aiter_raw():
                        yield chunk
            else:
                assert self.raw is not None
                async for chunk in self.raw.stream(path):
                    yield chunk

        async def aclose(self) -> None:
            await (self.httpx.aclose() if self.httpx is not None else self.raw.aclose())  # type: ignore[union-attr]

    async def one(conn: Conn, payload: dict[str, Any]) -> dict[str, Any]:
        tokens: list[str] = []
        first = last = float("nan")
        t0 = time.perf_counter()
        answer = await conn.post(submit_path, payload)
        if kind == "gradio":
            events_path = f"{submit_path}/{answer['event_id']}"
        else:
            events_path = f"/api/jobs/{answer['id']}/events"
        end = None
        buf = b""
        stream = conn.stream(events_path)
        async for chunk in stream:
            frames, buf = _frames(buf + chunk)
            for frame in frames:
                event = frame.get("event", "message")
                if event == "output":
                    tokens.append(json.loads(frame["data"])["data"]["chunk"])
                elif event == "generating":
                    tokens.append(json.loads(frame["data"])[0])
                else:
                    if event in TERMINAL:
                        end = event
                    continue
                now = time.perf_counter()
                if len(tokens) == 1:
                    first = now - t0
                last = now - t0
            if end:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return {"tokens": tokens, "first": first, "last": last, "end": end}

    warmup = Conn()
    try:
        await one(warmup, warm)  # the server's first request, untimed
    finally:
        await warmup.aclose()
    pool = [Conn() for _ in range(clients)]
    try:
        window.start()
        results = list(await asyncio.gather(*(one(c, body) for c in pool)))
        window.stop()
        return results
    finally:
        await asyncio.gather(*(c.aclose() for c in pool))


def _gradio_client_clients(url: str, function: str, clients: int, n: int, interval: float,
                           window: Window) -> list[dict[str, Any]]:
    from gradio_client import Client

    client = Client(url + "/ui/", verbose=False, download_files=False, max_workers=clients)
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    go = threading.Barrier(clients + 1)

    def one(i: int) -> None:
        tokens: list[str] = []
        first = last = float("nan")
        go.wait()
        t0 = time.perf_counter()
        job = client.submit(n, interval, api_name=f"/{function}")
        for token in job:  # Job.__next__: polls the job's outputs every 1 ms
            tokens.append(token)
            now = time.perf_counter()
            if len(tokens) == 1:
                first = now - t0
            last = now - t0
        job.result()  # raises the server's error, if any
        results[i] = {"tokens": tokens, "first": first, "last": last, "end": "complete"}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    list(client.submit(WARMUP_TOKENS, interval, api_name=f"/{function}"))  # untimed
    for t in threads:
        t.start()
    window.start()
    go.wait()
    for t in threads:
        t.join()
    window.stop()
    client.close()
    return results


def clients_main(argv: list[str]) -> None:
    kind, transport, url, function, pid, clients, n, interval = argv
    hb.raise_nofile()
    window = Window(int(pid))
    if kind == "gradio_client":
        per_request = _gradio_client_clients(url, function, int(clients), int(n),
                                             float(interval), window)
    else:
        import uvloop

        per_request = uvloop.run(_sse_clients(kind, transport, url, function, int(clients),
                                              int(n), float(interval), window))
    expected = [str(i) for i in range(int(n))]
    problems = []
    for i, r in enumerate(per_request):
        if r.get("tokens") != expected:
            got = r.get("tokens", [])
            problems.append(f"request {i}: {len(got)} tokens of {n}, in order and once: "
                            f"{got == expected[:len(got)]}, ended with {r.get('end')}, "
                            f"first {got[:3]}, last {got[-3:]}")
    print(json.dumps({
        "last_s": [r.get("last", float("nan")) for r in per_request],
        "first_s": [r.get("first", float("nan")) for r in per_request],
        "problems": problems[:10], "failed_requests": len(problems), **window.shares(),
    }), flush=True)


# -- the parent ------------------------------------------------------------------------
def summarise(r: dict[str, Any]) -> dict[str, Any]:
    last = sorted(r["last_s"])
    first = sorted(r["first_s"])
    return {"mean_s": statistics.fmean(last), "p95_s": hb.percentile(last, 95),
            "max_s": last[-1], "first_p50_s": hb.percentile(first, 50),
            "first_p95_s": hb.percentile(first, 95), "ok": not r["failed_requests"],
            "failed_requests": r["failed_requests"], "problems": r["problems"],
            "client_cpu_share": r["client_cpu_share"],
            "server_cpu_share": r["server_cpu_share"]}


def crashed(error: str) -> dict[str, Any]:
    """The row of a measurement that broke (server or clients crashed, or timed out)."""
    nan = float("nan")
    return {"mean_s": nan, "p95_s": nan, "max_s": nan, "first_p50_s": nan,
            "first_p95_s": nan, "ok": False, "failed_requests": -1,
            "problems": [error[-2000:]], "client_cpu_share": nan, "server_cpu_share": nan}


def run_one(name: str, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    target, genq, kind, function = SYSTEMS[name]
    with hb.serve(name.split()[0], target, genq=genq) as server:
        r = hb.run_json([__file__, "--child", "clients", kind, args.client, server.url, function,
                         str(server.pid), str(clients), str(args.n), str(args.interval)],
                        timeout=args.timeout)
    server.cleanup()
    return summarise(r)


def median_row(rs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("mean_s", "p95_s", "max_s", "first_p50_s", "first_p95_s", "client_cpu_share",
            "server_cpu_share")
    out: dict[str, Any] = {k: hb.median([r[k] for r in rs]) for k in keys}
    out["ok"] = all(r["ok"] for r in rs)
    out["rounds"] = len(rs)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(DEFAULT),
                        help="comma-separated, from: " + ", ".join(SYSTEMS))
    parser.add_argument("--clients", default="1,25,100,250",
                        help="concurrency levels C (comma-separated)")
    parser.add_argument("--n", type=int, default=200, help="tokens per request")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds per token")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds allowed for one measurement's clients")
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx",
                        help="how the SSE systems are followed: httpx (one AsyncClient per "
                             "request), or raw HTTP/1.1 on asyncio streams (tens of us per "
                             "request: the server, not the client, is measured at C=250)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: C = 1, 25; 50 tokens; one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.n, args.rounds = "1,25", 50, 1
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")
    levels = [int(c) for c in args.clients.split(",")]
    hb.raise_nofile()
    machine = h.machine_line()
    print(machine)
    print(f"bench_scale: {args.n} tokens per request, one per {args.interval * 1000:g} ms "
          f"(a request >= {args.n * args.interval:.1f} s); C = {levels}; {args.rounds} "
          f"round(s); SSE followed with {args.client}", flush=True)
    raw: dict[tuple[str, int], list[dict[str, Any]]] = {}
    flip = False
    for rnd in range(args.rounds):
        for c in levels:
            for name in (systems[::-1] if flip else systems):
                try:
                    r = run_one(name, c, args)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:  # keep the others
                    r = crashed(str(exc))
                raw.setdefault((name, c), []).append(r)
                status = "ok" if r["ok"] else (
                    f"FAILED: {r['failed_requests']} of {c} requests wrong: {r['problems'][:2]}"
                    if r["failed_requests"] >= 0 else f"FAILED: {r['problems'][0]}")
                print(f"  round {rnd + 1} C={c:<4} {name:<24} mean {r['mean_s']:6.3f} s  "
                      f"p95 {r['p95_s']:6.3f} s  first token p50 {r['first_p50_s'] * 1000:7.1f}"
                      f" p95 {r['first_p95_s'] * 1000:7.1f} ms  server {r['server_cpu_share']:4.0%}"
                      f"  client {r['client_cpu_share']:4.0%}  {status}", flush=True)
            flip = not flip
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for (name, c), rs in raw.items():
        summary.setdefault(name, {})[str(c)] = median_row(rs)
    for by_c in summary.values():
        for key, row in by_c.items():
            floor = summary.get(FLOOR, {}).get(key)
            row["mean_vs_floor"] = row["mean_s"] / floor["mean_s"] if floor else None
            row["p95_vs_floor"] = row["p95_s"] / floor["p95_s"] if floor else None
    rows = []
    for c in levels:
        for name in systems:
            row = summary[name][str(c)]
            ratio = ("-" if name == FLOOR or row["mean_vs_floor"] is None else
                     f"{row['mean_vs_floor']:.2f}x / {row['p95_vs_floor']:.2f}x")
            rows.append([str(c), name, f"{row['mean_s']:.3f}", f"{row['p95_s']:.3f}",
                         f"{row['first_p50_s'] * 1000:.1f}", f"{row['first_p95_s'] * 1000:.1f}",
                         ratio, f"{row['server_cpu_share']:.0%}",
                         f"{row['client_cpu_share']:.0%}", "ok" if row["ok"] else "FAILED"])
    print()
    print(h.table(["C", "system", "mean s", "p95 s", "first p50 ms", "first p95 ms",
                   "vs floor (mean / p95)", "server CPU", "client CPU", "tokens"], rows))
    top = str(max(levels))
    for name in ("genq async-gen", "genq sync-gen"):
        got = summary.get(name, {}).get(top)
        if got and got["mean_vs_floor"] is not None:
            met = got["mean_vs_floor"] <= 1.3 and got["p95_vs_floor"] <= 1.3
            print(f"goal at C={top}: {name} within 1.3x of the floor (mean and p95): "
                  f"{got['mean_vs_floor']:.2f}x / {got['p95_vs_floor']:.2f}x -> "
                  f"{'met' if met else 'NOT met'}")
    got = summary.get("genq sync-gen", {}).get(top)
    if got:
        print(f"goal at C={top}: sync generators' first token under 100 ms (p95): "
              f"{got['first_p95_s'] * 1000:.1f} ms -> "
              f"{'met' if got['first_p95_s'] < 0.1 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "bench_scale", "machine": machine, "client": args.client,
            "tokens": args.n,
            "interval_s": args.interval, "clients": levels, "rounds": args.rounds,
            "floor": FLOOR, "systems": systems, "summary": summary,
            "runs": [{"system": name, "clients": c, **r}
                     for (name, c), rs in raw.items() for r in rs],
        }, indent=1))
    failed = [f"{name} C={c}" for (name, c), rs in raw.items() if not all(r["ok"] for r in rs)]
    if failed:
        print(f"FAILED rows (a crash, or a client that missed, repeated or reordered tokens): "
              f"{failed}")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child" and sys.argv[2] == "clients":
        clients_main(sys.argv[3:])
    else:
        sys.exit(main())
