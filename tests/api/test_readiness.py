"""Readiness you can see, on SQLite in one process: ``/readyz`` answers 503 ``not_ready``
while a function's model loads or its setup fails (naming the function, the state and,
for an admin, the error), 200 once a worker is ready; a queued job's view says why it
waits (``waiting``), through the API and through ``app.local()``. genq.readiness,
docs/api.md (/readyz, the job view)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genq.models import JobStatus, WorkerInfo
from genq.readiness import cluster_readiness
from genq.server.auth import ApiKeys, Caller
from genq.serving import host as host_module
from tests.apps import model_app
from tests.support.http_fixtures import ServerFactory, error_of, finished, wait_until


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The model loads once this file exists (tests/apps/model_app.py)."""
    path = tmp_path / "gate"
    monkeypatch.setenv("GENQ_TEST_MODEL_GATE", str(path))
    return path


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The model's setup raises while this file exists; retried after 0.2 s, 0.4 s..."""
    path = tmp_path / "weights.bin"
    path.write_text("not yet")
    monkeypatch.setenv("GENQ_TEST_MODEL_BROKEN", str(path))
    monkeypatch.setattr(host_module, "SETUP_RETRY_FIRST", 0.2)
    yield path


def not_ready(http: httpx.Client, state: str) -> dict[str, Any]:
    """/readyz's 503 once every function of model_app is in ``state``."""
    def answered() -> dict[str, Any] | None:
        response = http.get("/readyz")
        if response.status_code != 503:
            return None
        error = error_of(response, 503, "not_ready")
        states = {f["state"] for f in error["functions"].values()}
        return error if states == {state} else None

    found: dict[str, Any] = wait_until(answered, 20, 0.05, what=f"/readyz: {state}")
    return found


def test_readyz_and_the_job_view_while_the_model_loads(
        make_server: ServerFactory, gate: Path) -> None:
    live = make_server(app=model_app.app)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        error = not_ready(http, "loading")
        assert error["message"] == ("not every function has a ready worker: "
                                    "scale (loading), chat (loading)")
        scale = error["functions"]["scale"]  # an open loopback server shows the detail
        assert (scale["state"], scale["ready"], scale["loading"], scale["failed"]) == (
            "loading", 0, 1, 0)
        assert scale["model"] == "weights" and scale["seconds"] >= 0
        assert error["workers"] == 1  # the cluster figures, as before

        job = http.post("/api/jobs", json={"function": "scale", "input": {"x": 21}}).json()
        assert job["status"] == "queued" and job["queue_position"] == 1
        waiting = job["waiting"]
        assert waiting["reason"] == "loading" and waiting["since"] > 0
        assert waiting["message"].startswith("waiting for a worker: model loading (")
        assert waiting["message"].endswith(" s so far)")
        listed = http.get("/api/jobs").json()["jobs"][0]
        assert listed["waiting"]["reason"] == "loading"

        gate.touch()
        wait_until(lambda: http.get("/readyz").status_code == 200, 30, 0.05,
                   what="/readyz once the model loaded")
        ready = http.get("/readyz").json()
        assert ready["functions"]["scale"] == {"state": "ready", "ready": 1, "loading": 0,
                                               "failed": 0}
        done = finished(http, job["id"])
        assert done["status"] == "succeeded" and done["result"] == 42
        assert done["waiting"] is None  # only a queued job waits


def test_a_failing_setup_is_named_with_its_error_and_next_try(
        make_server: ServerFactory, broken: Path) -> None:
    live = make_server(app=model_app.app)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        error = not_ready(http, "failed")
        assert "scale (failed)" in error["message"]
        scale = error["functions"]["scale"]
        assert scale["failed"] == 1 and scale["model"] == "weights"
        assert scale["error"] == "OSError: weights file weights.bin is not readable yet"
        assert scale["retry_at"] > scale["since"]

        job = http.post("/api/jobs", json={"function": "scale", "input": {"x": 1}}).json()
        # The retries come fast here: the job may be seen while a retry loads.
        message = job["waiting"]["message"]
        assert message.startswith("waiting for a worker: model ")
        wait_until(lambda: http.get(f"/api/jobs/{job['id']}").json()["waiting"]["reason"]
                   == "failed", 10, 0.05, what="the job view to say the load failed")
        message = http.get(f"/api/jobs/{job['id']}").json()["waiting"]["message"]
        assert message.startswith("waiting for a worker: model weights failed to load "
                                  "(OSError: weights file weights.bin is not readable yet), "
                                  "retrying "), message

        broken.unlink()
        assert finished(http, job["id"])["result"] == 2
        assert http.get("/readyz").status_code == 200


def test_probes_see_states_and_admins_see_errors(
        make_server: ServerFactory, broken: Path) -> None:
    keys = ApiKeys({"key-a": "alice", "key-ops": Caller("ops", admin=True)})
    live = make_server(app=model_app.app, keys=keys)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        error = not_ready(http, "failed")  # a probe, no key
        assert error["functions"]["scale"] == {"state": "failed", "ready": 0, "loading": 0,
                                               "failed": 1}
        assert "workers" not in error and "OSError" not in str(error)
        admin = error_of(http.get("/readyz", headers={"Authorization": "Bearer key-ops"}),
                         503, "not_ready")
        assert admin["functions"]["scale"]["error"].startswith("OSError: ")


def test_a_server_without_workers_is_up_but_not_ready(make_server: ServerFactory) -> None:
    live = make_server(app=model_app.app, workers=False)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        error = error_of(http.get("/readyz"), 503, "not_ready")
        assert error["functions"]["chat"]["state"] == "no_worker"
        job = http.post("/api/jobs", json={"function": "chat",
                                           "input": {"message": "hi"}}).json()
        assert job["waiting"] == {"reason": "no_worker", "since": None, "message":
                                  "waiting for a worker: no worker serves this function"}


def test_app_local_job_info_says_why_it_waits(tmp_path: Path, gate: Path) -> None:
    with model_app.app.local(tmp_path / "jobs.sqlite3") as client:
        job = client.submit("scale", x=4)
        info = wait_until(lambda: (i := job.info()).waiting and i, 10, 0.05,
                          what="a worker's report")
        assert info.status is JobStatus.QUEUED
        assert info.waiting["reason"] == "loading"
        assert "model loading" in info.waiting["message"]
        gate.touch()
        assert job.result(timeout=30) == 8
        assert job.info().waiting is None


def report(worker_id: str, function: str, state: str, **model: Any) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(worker_id, "h", 1, (function,), 1, 0, now, now, states={function: {
        "state": state, "since": model.get("since", now),
        "models": [{"model": "m", "state": state, **model}]}})


def test_the_best_worker_decides_and_failures_name_the_soonest_retry() -> None:
    now = time.time()
    workers = [report("a", "f", "failed", error="OSError: late", retry_at=now + 60),
               report("b", "f", "failed", error="OSError: soon", retry_at=now + 5),
               report("c", "g", "failed", error="x", retry_at=now),
               report("d", "g", "loading", since=now - 12.4),
               report("e", "h", "loading"), report("f", "h", "ready")]
    view = cluster_readiness(["f", "g", "h", "nobody"], workers)
    assert view["f"].error == "OSError: soon" and view["f"].failed == 2
    waiting = view["f"].waiting(now)
    assert waiting is not None and waiting["message"] == (
        "waiting for a worker: model m failed to load (OSError: soon), retrying in 5 s")
    assert view["g"].state == "loading" and (view["g"].loading, view["g"].failed) == (1, 1)
    assert view["g"].waiting(now) == {"reason": "loading", "since": now - 12.4,
                                      "message": "waiting for a worker: model loading "
                                                 "(12 s so far)"}
    assert view["h"].state == "ready" and view["h"].waiting(now) is None
    assert view["nobody"].state == "no_worker" and view["nobody"].ready == 0
