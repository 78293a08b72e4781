"""5,000 idle SSE followers on one genq server process: do their heartbeats arrive on
time, and what does each follower cost in memory?

    .venv/bin/python bench/bench_sse_idle.py             # ~80 s: the three runs below
    .venv/bin/python bench/bench_sse_idle.py --runs queued --followers 1000   # smaller

The server is ``genq serve bench/http_apps.py:app --heartbeat 2`` on a fresh SQLite file,
alone in its process. Followers come from 4 client processes, each binding its sockets
to its own loopback address (127.0.0.2 ... 127.0.0.5) and holding an equal share of the
connections (plain asyncio protocols that count the ``: ping`` heartbeat comments and
time-stamp each on arrival). Per mode:

1. the clients submit one job per follower (``POST /api/jobs``), then
2. open one ``GET /api/jobs/{id}/events`` stream per job (at most 100 connects in flight
   per process) and hold it; once every client is connected,
3. a common window of ``--window`` seconds (default 10) starts. For each connection the
   client records every heartbeat; a gap between consecutive heartbeats (or from the last
   one to the end of the window) longer than heartbeat + 1 s counts as late.

Modes: ``queued`` — one ``hold`` job (``concurrency=1``) occupies the function, the 5,000
followed jobs wait behind it, so nothing happens but heartbeats; ``running`` — 5,000
``sleeper`` jobs (``concurrency=10_000``) all running an ``asyncio.sleep``, so the worker
also renews 5,000 leases every second. A run is MODE or MODE:tuned-gc, the latter with the
server's cyclic GC thresholds raised (``--tuned-gc``, default 50000,20,20, set through
GENQ_BENCH_GC_THRESHOLD in bench/http_apps.py) to show what full collections of the
~1.3 million objects 5,000 open streams keep alive cost the heartbeats.

Reported: heartbeats received, late gaps and the worst gap, connections lost, the
server's VmRSS (/proc/PID/status) when started, with the jobs, and with the followers
connected, and the server's CPU share during the window.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _httpbench as hb

CLIENT_PROCS = 4
CONNECTS_IN_FLIGHT = 100
SUBMITTERS = 16
PING = b": ping"


# -- a client process ----------------------------------------------------------------------
class Follower(asyncio.Protocol):
    """One SSE connection: records the arrival time of every heartbeat comment."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.beats: list[float] = []
        self.status: int | None = None
        self.lost = False
        self.connected = asyncio.get_running_loop().create_future()
        self._tail = b""
        self._transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's are not asyncio's classes
        self._transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.status is None:
            self.status = int(data.split(b" ", 2)[1])
            if not self.connected.done():
                self.connected.set_result(self.status)
        data = self._tail + data
        self.beats.extend([now] * data.count(PING))
        self._tail = data[-(len(PING) - 1):]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed before a response"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _client(function: str, count: int, url: str, local_ip: str, heartbeat: float
                  ) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port_s = url.removeprefix("http://").split(":")
    port = int(port_s)

    async def readline() -> str:
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    # 1. submit one job per follower
    job_ids: list[str] = []
    todo = iter(range(count))
    body = json.dumps({"function": function, "input": {"seconds": 600}}).encode()

    async def submitter() -> None:
        raw = hb.RawHTTP(host, port, local_ip)
        try:
            for _ in todo:
                status, text = await raw.request("POST", "/api/jobs", body)
                if status not in (200, 201):
                    raise RuntimeError(f"submit: {status} {text[:200]!r}")
                job_ids.append(json.loads(text)["id"])
        finally:
            await raw.aclose()

    t = time.monotonic()
    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    submit_s = time.monotonic() - t
    print("jobs", flush=True)
    await readline()  # "connect"

    # 2. one SSE follower per job
    followers: list[Follower] = []
    failed = 0
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def follow(job_id: str) -> None:
        nonlocal failed
        request = (f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()
        async with gate:
            try:
                _, follower = await loop.create_connection(
                    lambda: Follower(request), host, port, local_addr=(local_ip, 0))
                status = await asyncio.wait_for(follower.connected, 30)
            except (OSError, TimeoutError) as exc:
                failed += 1
                print(f"connect failed: {exc!r}", file=sys.stderr)
                return
            if status != 200:
                failed += 1
            followers.append(follower)

    t = time.monotonic()
    await asyncio.gather(*(follow(j) for j in job_ids))
    connect_s = time.monotonic() - t
    print(f"connected {len(followers)} {failed}", flush=True)

    # 3. the common window
    t0, t1 = map(float, (await readline()).split()[1:])
    await asyncio.sleep(max(0.0, t1 - time.time()) + 0.05)
    late_limit = heartbeat + 1.0
    worst = 0.0
    late_n = late_conns = lost = 0
    counts: list[int] = []
    for f in followers:
        if f.lost:
            lost += 1
        before = [b for b in f.beats if b < t0]
        inside = [b for b in f.beats if t0 <= b <= t1]
        counts.append(len(inside))
        edges = ([before[-1]] if before else [t0]) + inside + [t1]
        gaps = [b - a for a, b in itertools.pairwise(edges)]
        worst_here = max(gaps)
        worst = max(worst, worst_here)
        n_late = sum(1 for g in gaps if g > late_limit)
        late_n += n_late
        late_conns += n_late > 0
    for f in followers:
        f.close()
    return {"followers": len(followers), "failed": failed, "lost": lost,
            "beats": sum(counts), "min_beats": min(counts, default=0),
            "max_beats": max(counts, default=0), "late_gaps": late_n,
            "late_connections": late_conns, "worst_gap": worst,
            "submit_s": submit_s, "connect_s": connect_s, "cpu_s": hb.self_cpu()}


def client_main(argv: list[str]) -> None:
    import uvloop

    hb.raise_nofile()
    function, count, url, local_ip, heartbeat = argv
    result = uvloop.run(_client(function, int(count), url, local_ip, float(heartbeat)))
    print(json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------
def _expect(proc: Any, prefix: str, timeout: float) -> str:
    """The next stdout line of a client, which must start with ``prefix``."""
    import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = str(proc.stdout.readline()).strip()
            if line.startswith(prefix):
                return line
            if not line and proc.poll() is not None:
                break
    raise RuntimeError(f"client did not say {prefix!r} in {timeout} s:\n"
                       + (proc.stderr.read()[-3000:] if proc.poll() is not None else ""))


def run_mode(run: str, args: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    mode, _, variant = run.partition(":")
    env = {"GENQ_BENCH_GC_THRESHOLD": args.tuned_gc} if variant == "tuned-gc" else {}
    function = "hold" if mode == "queued" else "sleeper"
    share = [args.followers // CLIENT_PROCS + (i < args.followers % CLIENT_PROCS)
             for i in range(CLIENT_PROCS)]
    out: dict[str, Any] = {"mode": mode}
    with hb.serve("idle", "bench/http_apps.py:app", genq=True, heartbeat=args.heartbeat,
                  kill=True, extra_env=env) as server:
        time.sleep(0.5)
        out["rss_started"] = server.rss_kib() / 1024
        if mode == "queued":  # the job that holds the only slot of ``hold``
            import httpx

            httpx.post(server.url + "/api/jobs",
                       json={"function": "hold", "input": {"seconds": 600}}).raise_for_status()
        clients = [subprocess.Popen(
            [hb.PYTHON, __file__, "--child", "client", function, str(n), server.url,
             f"127.0.0.{i + 2}", str(args.heartbeat)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=hb.ROOT) for i, n in enumerate(share)]
        try:
            t = time.monotonic()
            for c in clients:
                _expect(c, "jobs", 120)
            out["submit_s"] = time.monotonic() - t
            time.sleep(1.0)  # let the writes settle
            out["rss_jobs"] = server.rss_kib() / 1024
            for c in clients:
                assert c.stdin is not None
                c.stdin.write("connect\n")
                c.stdin.flush()
            t = time.monotonic()
            connected = [_expect(c, "connected", 120) for c in clients]
            out["connect_s"] = time.monotonic() - t
            out["connected"] = sum(int(line.split()[1]) for line in connected)
            t0 = time.time() + 0.5
            t1 = t0 + args.window
            for c in clients:
                assert c.stdin is not None
                c.stdin.write(f"window {t0} {t1}\n")
                c.stdin.flush()
            time.sleep(max(0.0, t0 - time.time()))
            cpu0 = server.cpu()
            spy = None
            if args.spy:  # a sampling profile of the server during the window
                spy = subprocess.Popen(
                    [str(Path(hb.PYTHON).with_name("py-spy")), "record", "--pid",
                     str(server.pid), "--duration", str(int(args.window)), "--rate", "200",
                     "--threads", "--idle", "--format", "raw",
                     "--output", f"{args.spy}.{run.replace(':', '.')}.txt"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(max(0.0, t1 - time.time()))
            out["server_cpu_share"] = (server.cpu() - cpu0) / args.window
            if spy is not None:
                spy.wait(30)
            out["rss_followers"] = server.rss_kib() / 1024
            results = [hb.collect_json(c, 60) for c in clients]  # type: ignore[arg-type]
            out["gc_window"] = hb.gc_pauses(server.gc_log, t0, t1)
            out["gc_run"] = hb.gc_pauses(server.gc_log)
        finally:
            for c in clients:
                if c.poll() is None:
                    c.kill()
    server.cleanup()
    for key in ("followers", "failed", "lost", "beats", "late_gaps", "late_connections"):
        out[key] = sum(r[key] for r in results)
    out["min_beats"] = min(r["min_beats"] for r in results)
    out["max_beats"] = max(r["max_beats"] for r in results)
    out["worst_gap"] = max(r["worst_gap"] for r in results)
    out["client_cpu_s"] = sum(r["cpu_s"] for r in results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=5000)
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--runs", default="queued,running,running:tuned-gc",
                        help="MODE[:tuned-gc], comma-separated; modes: queued, running")
    parser.add_argument("--tuned-gc", default="50000,20,20",
                        help="gc.set_threshold() of the server in :tuned-gc runs")
    parser.add_argument("--spy", metavar="PREFIX",
                        help="py-spy the server during each window into PREFIX.RUN.txt")
    args = parser.parse_args()
    limit = hb.raise_nofile()
    print(h.machine_line())
    print(f"{args.followers:,} idle SSE followers, heartbeat {args.heartbeat:g} s, "
          f"{args.window:g} s window, {CLIENT_PROCS} client processes; open-file limit "
          f"{limit:,}")
    expected = args.window / args.heartbeat
    for mode in args.runs.split(","):
        r = run_mode(mode, args)
        ok = (r["followers"] == args.followers and not r["failed"] and not r["lost"]
              and not r["late_gaps"])
        per_follower = (r["rss_followers"] - r["rss_jobs"]) * 1024 / max(1, r["followers"])
        print(f"\n[{mode}] submitted {args.followers:,} jobs in {r['submit_s']:.1f} s, "
              f"connected {r['connected']:,} followers in {r['connect_s']:.1f} s")
        print(f"  heartbeats in the window: {r['beats']:,} (expected {expected:g} per "
              f"follower on average = {expected * args.followers:,.0f}); per follower min "
              f"{r['min_beats']} max {r['max_beats']}")
        print(f"  late gaps (> {args.heartbeat + 1:g} s): {r['late_gaps']} on "
              f"{r['late_connections']} connections; worst gap {r['worst_gap']:.2f} s; "
              f"connections failed {r['failed']}, lost {r['lost']}")
        print(f"  server VmRSS: started {r['rss_started']:.0f} MiB, with the jobs "
              f"{r['rss_jobs']:.0f} MiB, with the followers {r['rss_followers']:.0f} MiB "
              f"(+{per_follower:.1f} KiB per follower); server CPU in the window "
              f"{r['server_cpu_share']:.0%} of a core")
        w, a = r["gc_window"], r["gc_run"]
        print(f"  server GC: {w['full_gcs']} full collections in the window (longest "
              f"{w['longest_full_gc']:.2f} s), {a['full_gcs']} in the whole run (longest "
              f"{a['longest_full_gc']:.2f} s, all pauses over 5 ms: {a['gc_pause_total']:.1f} s)")
        print(f"  -> {'every follower got its heartbeats on time' if ok else 'NOT all on time'}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child" and sys.argv[2] == "client":
        client_main(sys.argv[3:])
    else:
        main()
