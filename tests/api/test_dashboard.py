"""The dashboard's figures hold their memory however many jobs finish.

The server's ``Activity`` sees every finished job; a long-running server must not keep
something per job (a soak of 92,748 jobs grew the server by 0.24 MiB per 1,000, all of
it here: bench/bench_soak.py). It still counts every job in its figures.
"""

from __future__ import annotations

import time
import tracemalloc

from genq.models import Job, JobStatus, new_job_id
from genq.server.dashboard import RECENT, Activity


def finish(activity: Activity, n: int) -> None:
    now = time.time()
    for i in range(n):
        # Names as a request gives them: a new string per job, equal to the others.
        function, owner = "".join(["ren", "der"]), "".join(["al", "ice"])
        activity.observe(Job(id=new_job_id(), function=function, input={}, owner=owner,
                             status=JobStatus.FAILED if i % 10 == 0 else JobStatus.SUCCEEDED,
                             created_at=now - 0.3, started_at=now - 0.2, finished_at=now))


def test_activity_does_not_grow_with_the_jobs_it_counts() -> None:
    activity = Activity()
    tracemalloc.start()
    try:
        finish(activity, RECENT)  # its sample of recent jobs is full
        before = tracemalloc.get_traced_memory()[0]
        finish(activity, 40_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 << 10, f"grew {grown / 1024:.0f} KiB over 40,000 jobs"
    figures = activity.summary("render")
    assert figures["throughput_per_min"] == RECENT + 40_000
    assert figures["failed_recent"] == (RECENT + 40_000) // 10
    assert figures["totals"] == {"succeeded": 45_000, "failed": 5_000}
    assert figures["run_p50"] is not None and figures["latency_p95"] is not None
    assert activity.summary("render", owner="bob")["throughput_per_min"] == 0
