"""The dashboard's figures come from the store: a restart does not reset them.

``/api/stats``'s totals, throughput, failures and percentiles are read from the store
(``Store.finished_stats``: totals counted as each job ends, and a bounded window of the
latest finished jobs), so a server restarted on the same SQLite file, or on the same
Redis, shows what it showed before; and the server keeps nothing per job in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.apps.http_app import app as http_app
from tests.support.http_fixtures import FAST, LiveServer, wait_until
from tests.support.store_fixtures import StoreMaker


def finished(http: httpx.Client, job_id: str) -> dict:
    def done() -> dict | None:
        view = http.get(f"/api/jobs/{job_id}").json()
        return view if view["status"] not in ("queued", "running") else None

    return wait_until(done, what=f"job {job_id} to finish")


def _counted(http: httpx.Client) -> dict[str, Any] | None:
    figures: dict[str, Any] = http.get("/api/stats").json()["functions"]
    done = figures["add"]["totals"].get("succeeded") == 3 and figures["fail"]["totals"]
    return figures if done else None


def test_stats_survive_a_restart_of_the_server(tmp_path: Path, stores: StoreMaker) -> None:
    live = LiveServer(http_app, tmp_path / "unused.sqlite3", FAST, make_store=stores)
    live.start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            for x in range(3):
                job = http.post("/api/jobs", json={"function": "add", "input": {"x": x}}).json()
                assert finished(http, job["id"])["status"] == "succeeded"
            job = http.post("/api/jobs", json={"function": "fail", "input": {}}).json()
            assert finished(http, job["id"])["status"] == "failed"
            # The figures are read from the file: on SQLite the last finish may still be
            # in the writer's next commit (milliseconds), and a read is cached 1 s.
            before = wait_until(lambda: _counted(http), 10, what="the totals to count all 4")
        live.restart()
        with httpx.Client(base_url=live.url, timeout=30) as http:
            after = http.get("/api/stats").json()["functions"]
    finally:
        live.stop()
    for figures in (before, after):
        assert figures["add"]["totals"] == {"succeeded": 3}
        assert figures["fail"]["totals"] == {"failed": 1}
        assert figures["fail"]["failed_recent"] == 1
        assert figures["add"]["throughput_per_min"] == 3
        assert figures["add"]["run_p50"] is not None
        assert figures["add"]["latency_p95"] is not None
        assert figures["tokens"]["totals"] == {} and figures["tokens"]["run_p50"] is None
    assert after["add"]["run_p95"] == before["add"]["run_p95"]
