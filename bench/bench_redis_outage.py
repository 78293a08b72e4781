"""A Redis outage under a streaming job: what it loses, and how the API answers meanwhile.

    .venv/bin/python bench/bench_redis_outage.py                 # a 60 s outage, ~90 s
    .venv/bin/python bench/bench_redis_outage.py --outage 10     # a quick one

A private redis-server (AOF, ``appendfsync everysec``, the recommended setting), one
``genq serve --no-workers`` front end and two ``genq worker`` processes with the
default lease (30 s) and ``retry_for`` (15 s), running ``tests/apps/cluster_app.py``.
One job streams a chunk every 50 ms. Once it has streamed for a second, Redis is
stopped (SIGTERM) for ``--outage`` seconds and started again on the same port and data
directory. Meanwhile the script asks the front end for the job once (that call waits
``retry_for``), then ``--calls`` (20) more times. It prints the figures docs/reliability.md and
docs/redis.md quote: chunks made and in the log, lost, duplicated, id gaps, attempts,
the job's end, the API's answers during the outage, and whether a worker logged a
traceback or an unretrieved task exception. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.cluster_fixtures import Cluster
from tests.support.http_fixtures import event_log, submit, wait_until
from tests.support.redis_server import RedisServer

DELAY = 0.05  # seconds between chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=60.0, help="seconds Redis is down")
    parser.add_argument("--lease", type=float, default=30.0, help="the workers' --lease")
    parser.add_argument("--retry-for", type=float, default=15.0, help="the store's retry_for")
    parser.add_argument("--calls", type=int, default=20,
                        help="API calls after the first one during the outage")
    args = parser.parse_args()
    n = int((args.outage + 15) / DELAY)  # streams on for 15 s after Redis is back
    tmp = Path(tempfile.mkdtemp(prefix="genq-outage-"))
    with RedisServer(tmp / "redis", appendfsync="everysec") as redis:
        cluster = Cluster(f"{redis.url}?retry_for={args.retry_for:g}", tmp / "procs")
        try:
            fe = cluster.front_end("fe")
            workers = [cluster.worker(f"w{i}", "--lease", f"{args.lease:g}")
                       for i in range(2)]
            with httpx.Client(base_url=fe.url, timeout=120) as http:
                job_id = submit(http, "chunks", tag="c", n=n, delay=DELAY)["id"]
                wait_until(lambda: sum(e["type"] == "output"
                                       for e in event_log(http, job_id)) >= 20,
                           60, what="the job to stream")
                redis.stop()
                down_at = time.monotonic()
                first_at = time.monotonic()
                first = http.get(f"/api/jobs/{job_id}")
                first_took = time.monotonic() - first_at
                rest_at = time.monotonic()
                rest = [http.get(f"/api/jobs/{job_id}") for _ in range(args.calls)]
                rest_took = time.monotonic() - rest_at
                time.sleep(max(0.0, args.outage - (time.monotonic() - down_at)))
                redis.start()
                outage = time.monotonic() - down_at
                wait_until(lambda: http.get(f"/api/jobs/{job_id}").status_code == 200, 60,
                           what="the front end to find Redis back")
                done = wait_until(lambda: (lambda j: j if j["status"] not in (
                    "queued", "running") else None)(http.get(f"/api/jobs/{job_id}").json()),
                    args.outage + 120, 0.2, what="the job to end")
                log = http.get(f"/api/jobs/{job_id}/events",
                               params={"format": "json", "limit": 10_000}).json()["events"]
        finally:
            cluster.close()
    chunks = [e["data"]["chunk"] for e in log if e["type"] == "output"]
    expected = [f"c:{i}" for i in range(n)]
    ids = [e["id"] for e in log]
    types = [e["type"] for e in log]
    worker_logs = "".join(w.log_path.read_text(errors="replace") for w in workers)
    print(f"outage: Redis down {outage:.1f} s (retry_for {args.retry_for:g} s, "
          f"lease {args.lease:g} s), one job streaming a chunk every {DELAY * 1000:.0f} ms")
    print(f"job: {done['status']}, attempts {types.count('started')}, "
          f"retrying events {types.count('retrying')}")
    print(f"chunks: made {n}, in the log {len(chunks)}, lost {len(set(expected) - set(chunks))}"
          f", duplicated {len(chunks) - len(set(chunks))}, in order {chunks == expected}")
    print(f"event ids: 1..{len(ids)} without gap or repeat: {ids == list(range(1, len(ids) + 1))}")
    print(f"API during the outage: first call {first.status_code} after {first_took:.1f} s; "
          f"next {args.calls}: {sorted({r.status_code for r in rest})} in "
          f"{rest_took * 1000:.0f} ms "
          f"in all, Retry-After {sorted({r.headers.get('retry-after') for r in rest})}")
    print("worker logs: traceback "
          f"{'Traceback' in worker_logs}, unretrieved task exception "
          f"{'Task exception was never retrieved' in worker_logs}")


if __name__ == "__main__":
    main()
