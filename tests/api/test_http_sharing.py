"""Owners sharing one server through HTTP (docs/sharing.md): a key's quotas in its
entry (``max_queued=N max_running=N``) or the server's default for keys without one;
over ``max_queued`` a submission is answered 429 ``owner_quota`` naming the owner and
the quota, with Retry-After, while other owners submit as before; ``max_running`` keeps
an owner to that many running jobs while other owners' jobs take the free slots."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from genq.server.auth import ApiKeys
from genq.store.base import Quota
from tests.apps import openai_app
from tests.support.http_fixtures import ServerFactory, error_of, finished, submit, wait_until

ALICE = {"Authorization": "Bearer key-a"}
BOB = {"Authorization": "Bearer key-b"}


def test_max_queued_refuses_only_the_owner_over_it(make_server: ServerFactory) -> None:
    keys = ApiKeys.parse("key-a owner=alice max_queued=2\nkey-b owner=bob")
    server = make_server(workers=False, keys=keys, quota=Quota(max_queued=3))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for x in range(2):
            submit(http, "add", headers=ALICE, x=x)
        refused = http.post("/api/jobs", json={"function": "add", "input": {"x": 9}},
                            headers=ALICE)
        error = error_of(refused, 429, "owner_quota")
        assert "owner alice has 2 queued jobs" in error["message"]
        assert "max_queued" in error["message"]
        assert (error["owner"], error["quota"], error["limit"]) == ("alice", "max_queued", 2)
        assert int(refused.headers["Retry-After"]) >= 1
        # bob is unaffected by alice's quota, and held to the server's default of 3
        for x in range(3):
            submit(http, "add", headers=BOB, x=x)
        error = error_of(http.post("/api/jobs", json={"function": "add", "input": {"x": 9}},
                                   headers=BOB), 429, "owner_quota")
        assert "owner bob has 3 queued jobs" in error["message"] and error["limit"] == 3
        # a cancelled job frees a place in alice's quota
        mine = http.get("/api/jobs", params={"status": "queued"}, headers=ALICE).json()
        http.post(f"/api/jobs/{mine['jobs'][0]['id']}/cancel", headers=ALICE)
        submit(http, "add", headers=ALICE, x=3)


def test_max_running_keeps_an_owner_to_its_slots_while_others_run(
        make_server: ServerFactory) -> None:
    keys = ApiKeys.parse("key-a owner=alice max_running=1\nkey-b owner=bob")
    server = make_server(keys=keys)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # `slow` runs two at a time on this server's worker
        first = submit(http, "slow", headers=ALICE, seconds=0.5)["id"]
        second = submit(http, "slow", headers=ALICE, seconds=0.5)["id"]
        bobs = submit(http, "slow", headers=BOB, seconds=0.5)["id"]

        def status(job_id: str, headers: dict[str, str]) -> str:
            view: dict[str, Any] = http.get(f"/api/jobs/{job_id}", headers=headers).json()
            return str(view["status"])

        # both slots busy: one of alice's jobs and bob's; alice's other one waits
        wait_until(lambda: status(first, ALICE) == "running" and status(bobs, BOB)
                   == "running", what="alice's first job and bob's to run together")
        assert status(second, ALICE) == "queued"
        for job_id, headers in ((first, ALICE), (second, ALICE), (bobs, BOB)):
            assert finished(http, job_id, headers)["status"] == "succeeded"

        def events(job_id: str) -> dict[str, float]:
            log = http.get(f"/api/jobs/{job_id}/events", params={"format": "json"},
                           headers=ALICE).json()["events"]
            return {e["type"]: e["ts"] for e in log}

        # alice's second job started only once her first had ended
        assert events(second)["started"] >= events(first)["succeeded"]


def test_key_entries_carry_quotas_and_refuse_bad_ones() -> None:
    keys = ApiKeys.parse("key-a owner=alice max_queued=100 max_running=4\nkey-b owner=bob")
    alice, bob = keys.lookup("key-a"), keys.lookup("key-b")
    assert alice is not None and alice.quota == Quota(100, 4)
    assert bob is not None and bob.quota == Quota()
    # a key's own quota wins over the server's default; what it leaves out is taken
    assert alice.quota.over(Quota(10, 1)) == Quota(100, 4)
    assert bob.quota.over(Quota(10, None)) == Quota(10, None)
    for bad in ("max_running=0", "max_queued=lots", "max_queued=-1"):
        with pytest.raises(ValueError, match="a whole number of jobs, 1 or more"):
            ApiKeys.parse(f"k owner=alice {bad}")


def test_openai_calls_count_against_the_same_quota(make_server: ServerFactory) -> None:
    keys = ApiKeys.parse("key-a owner=alice max_queued=1")
    server = make_server(openai_app.app, workers=False, keys=keys)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        submit(http, "chat", headers=ALICE, messages=[{"role": "user", "content": "hi"}])
        refused = http.post("/v1/chat/completions", headers=ALICE, json={
            "model": "echo-1", "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        error = refused.json()["error"]
        assert error["code"] == "owner_quota" and "owner alice has 1 queued jobs" in \
            error["message"]
