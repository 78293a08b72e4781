"""Readiness across processes on Redis: a ``genq serve --no-workers`` front end is up but
not ready until a ``genq worker`` process reports a ready model for every function;
meanwhile /readyz and a queued job's view say why (no worker, loading, failed with the
error). tests/api/test_readiness.py is the same on SQLite in one process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster_fixtures import Cluster
from tests.support.http_fixtures import error_of, finished, wait_until
from tests.support.redis_server import RedisServer


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with RedisServer(tmp_path / "redis") as redis:
        cluster = Cluster(redis.url, tmp_path / "procs", app="apps.model_app:app", env={
            "GENQ_TEST_MODEL_GATE": str(tmp_path / "gate"),
            "GENQ_TEST_MODEL_BROKEN": str(tmp_path / "weights.bin")})
        try:
            yield cluster
        finally:
            cluster.close()


def states(http: httpx.Client) -> tuple[int, dict[str, Any]]:
    response = http.get("/readyz")
    body = response.json()
    return response.status_code, (body["functions"] if response.status_code == 200
                                  else body["error"]["functions"])


def test_a_front_end_is_ready_once_a_worker_process_has_loaded_the_model(
        cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_text("being copied")
    front_end = cluster.front_end("fe")
    with httpx.Client(base_url=front_end.url, timeout=10) as http:
        error = error_of(http.get("/readyz"), 503, "not_ready")
        assert error["functions"]["scale"]["state"] == "no_worker"
        job = http.post("/api/jobs", json={"function": "scale", "input": {"x": 5}}).json()
        assert job["waiting"]["message"] == (
            "waiting for a worker: no worker serves this function")

        worker = cluster.worker("w")  # its setup fails while weights.bin exists
        wait_until(lambda: states(http)[1]["scale"]["state"] == "failed", 30, 0.1,
                   what="the worker's failed setup in /readyz")
        failed = states(http)[1]["scale"]
        assert failed["error"] == "OSError: weights file weights.bin is not readable yet"
        view = wait_until(lambda: (v := http.get(f"/api/jobs/{job['id']}").json())
                          ["waiting"]["reason"] == "failed" and v, 10, 0.1,
                          what="the job view to name the failure")
        assert "model weights failed to load (OSError: weights file weights.bin" in \
            view["waiting"]["message"]

        (tmp_path / "weights.bin").unlink()  # the next try loads, and waits at the gate
        wait_until(lambda: states(http)[1]["scale"]["state"] == "loading", 30, 0.1,
                   what="the retried load in /readyz")
        loading = states(http)[1]["scale"]
        assert (loading["loading"], loading["model"]) == (1, "weights")
        view = wait_until(lambda: (v := http.get(f"/api/jobs/{job['id']}").json())
                          ["waiting"]["reason"] == "loading" and v, 10, 0.1,
                          what="the job view to say the model loads")
        assert "waiting for a worker: model loading (" in view["waiting"]["message"]

        (tmp_path / "gate").touch()
        wait_until(lambda: states(http)[0] == 200, 30, 0.1, what="/readyz 200")
        assert http.get("/readyz").json()["functions"]["scale"] == {
            "state": "ready", "ready": 1, "loading": 0, "failed": 0}
        done = finished(http, job["id"])
        assert done["result"] == 10 and done["waiting"] is None
        assert worker.popen.poll() is None
