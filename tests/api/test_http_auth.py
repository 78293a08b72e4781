"""API keys against a live server: per-key rate limits with 429 + Retry-After, wrong-key
attempts throttled per client address, admin-only operations data, and nothing one
owner does visible to another in /api/stats or /healthz."""

from __future__ import annotations

import time

import httpx
import pytest

import genq
from genq.server.auth import ApiKeys, Caller
from genq.server.ratelimit import Rate
from tests.support.http_fixtures import ServerFactory, error_of, finished, submit

ALICE = {"Authorization": "Bearer key-a"}
BOB = {"Authorization": "Bearer key-b"}
OPS = {"Authorization": "Bearer key-ops"}


def test_key_entries_parse_owner_role_and_rate() -> None:
    keys = ApiKeys.parse("key-a=alice rate=5/s burst=2, key-ops=ops admin\nbare")
    assert keys.enabled
    with pytest.raises(ValueError, match="unknown option 'root'"):
        ApiKeys.parse("k=alice root")
    with pytest.raises(ValueError, match="not a rate"):
        ApiKeys.parse("k=alice rate=fast")
    assert Rate.parse("600/min") == Rate(10.0, 10)
    assert Rate.parse("5/10s", burst=3) == Rate(0.5, 3)


def test_rate_limit_per_key_answers_429_with_retry_after(make_server: ServerFactory) -> None:
    keys = ApiKeys({"key-a": Caller("alice", rate=Rate(0.2, burst=3)), "key-b": "bob"})
    live = make_server(keys=keys, rate_limit=Rate(1000, burst=1000))
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for _ in range(3):
            assert http.get("/api/jobs", headers=ALICE).status_code == 200
        response = http.get("/api/jobs", headers=ALICE)
        error = error_of(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 4  # one request per 5 s
        assert error["retry_after"] == int(response.headers["retry-after"])
        assert "0.2/s" in error["message"]
        # Submissions count too, and a refused one is not accepted work.
        error_of(http.post("/api/jobs", json={"function": "add", "input": {"x": 1}},
                           headers=ALICE), 429, "rate_limited")
        # Bob's key has its own bucket (the server's generous default).
        job = submit(http, "add", headers=BOB, x=1)
        assert finished(http, job["id"], headers=BOB)["status"] == "succeeded"
        assert [j["id"] for j in http.get("/api/jobs", headers=BOB).json()["jobs"]] == [
            job["id"]]


def test_wrong_keys_are_throttled_per_address(make_server: ServerFactory) -> None:
    live = make_server(keys=ApiKeys({"key-a": "alice"}))
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for _ in range(10):
            error_of(http.get("/api/jobs", headers={"Authorization": "Bearer guess"}),
                     401, "unauthorized")
        # The eleventh attempt is not even checked, whatever key it brings.
        response = http.get("/api/jobs", headers=ALICE)
        error_of(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) > 0


def test_operations_data_needs_an_admin_key(make_server: ServerFactory) -> None:
    keys = ApiKeys({"key-a": "alice", "key-b": "bob", "key-ops": Caller("ops", admin=True)})
    live = make_server(keys=keys)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        # Bob runs two jobs and keeps a stream open; alice runs nothing.
        jobs = [submit(http, "add", headers=BOB, x=i) for i in range(2)]
        for job in jobs:
            assert finished(http, job["id"], headers=BOB)["status"] == "succeeded"
        slow = submit(http, "slow", headers=BOB, seconds=60)
        with http.stream("GET", f"/api/jobs/{slow['id']}/events", headers=BOB) as stream:
            assert stream.status_code == 200

            error_of(http.get("/metrics"), 401, "unauthorized")
            error = error_of(http.get("/metrics", headers=ALICE), 403, "forbidden")
            assert "admin" in error["message"]
            metrics = http.get("/metrics", headers=OPS)
            assert metrics.status_code == 200
            assert 'genq_jobs_finished_total{function="add",status="succeeded"} 2.0' \
                in metrics.text

            alice = http.get("/api/stats", headers=ALICE).json()
            assert alice["functions"]["add"]["totals"] == {}
            assert alice["functions"]["add"]["throughput_per_min"] == 0
            assert alice["functions"]["add"]["latency_p50"] is None
            assert alice["streams"] == 0
            bob = http.get("/api/stats", headers=BOB).json()
            assert bob["functions"]["add"]["totals"] == {"succeeded": 2}
            assert bob["streams"] == 1
            ops = http.get("/api/stats", headers=OPS).json()
            assert ops["functions"]["add"]["totals"] == {"succeeded": 2}
            assert ops["streams"] == 1

            # Liveness and readiness answer anyone; the cluster figures only an admin.
            assert http.get("/healthz").json() == {"status": "ok"}
            assert http.get("/healthz", headers=ALICE).json() == {"status": "ok"}
            assert http.get("/healthz", headers=OPS).json()["worker"] is not None
            assert http.get("/readyz").json() == {"status": "ready"}
            assert http.get("/readyz", headers=ALICE).json() == {"status": "ready"}
            assert http.get("/readyz", headers=OPS).json()["workers"] == 1
        http.post(f"/api/jobs/{slow['id']}/cancel", headers=BOB)


def test_an_open_loopback_server_shows_everything(make_server: ServerFactory) -> None:
    live = make_server()
    with httpx.Client(base_url=live.url, timeout=30) as http:
        assert http.get("/metrics").status_code == 200
        assert "worker" in http.get("/healthz").json()
        assert "workers" in http.get("/readyz").json()


def test_the_python_client_waits_out_a_rate_limit(make_server: ServerFactory) -> None:
    keys = ApiKeys({"key-a": Caller("alice", rate=Rate(2.0, burst=2))})
    live = make_server(keys=keys)
    with genq.Client(live.url, api_key="key-a") as client:
        started = time.monotonic()
        results = [client.run("add", x=i, y=1) for i in range(3)]
        elapsed = time.monotonic() - started
    assert results == [1, 2, 3]  # every call answered, none refused
    # 3 runs are at least 6 requests at 2/s with a burst of 2: the client slept on 429s.
    assert elapsed >= 1.0
    with genq.Client(live.url, api_key="key-a", retry_for=0.5) as impatient:
        with pytest.raises(genq.RateLimited) as refused:
            for i in range(10):
                impatient.submit("add", x=i)
        assert refused.value.retry_after >= 1
