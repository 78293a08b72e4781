"""Webhooks on the Redis store: pending deliveries outlive the front end that made them,
and with several front ends each delivery is sent by one at a time (leases)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from genq.server import create_server
from genq.store.redis import RedisStore
from tests.apps.http_app import app
from tests.support.http_fixtures import FAST, wait_until
from tests.support.live_server import serve_asgi
from tests.support.redis_server import RedisServer
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_webhooks import FAST_HOOKS, SECRET


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendfsync="always") as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@contextlib.contextmanager
def front_end(redis: RedisServer) -> Iterator[str]:
    """``genq serve`` on the Redis store, workers included; yields its URL."""
    settings = replace(FAST, webhooks=FAST_HOOKS)
    with serve_asgi(create_server(app, RedisStore(redis.url), settings)) as url:
        yield url


def submit(url: str, receiver: Receiver, events: list[str] | None = None,
           **inputs: Any) -> str:
    response = httpx.post(f"{url}/api/jobs", json={
        "function": "add", "input": {"x": 1, **inputs}, "webhook": receiver.url,
        "webhook_events": events or []})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def report(url: str, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/api/jobs/{job_id}/webhooks").json()
    return answer


def test_a_front_end_restart_mid_retry_loses_no_delivery(redis: RedisServer,
                                                          receiver: Receiver) -> None:
    receiver.answers = [500] * 1000
    with front_end(redis) as url:
        job_id = submit(url, receiver, y=41)
        wait_until(lambda: len(receiver.of_job(job_id)) >= 2, what="two failed attempts")
    failed = receiver.of_job(job_id)
    receiver.answers = []
    with front_end(redis) as url:  # a new process's store, the same Redis
        wait_until(lambda: report(url, job_id)["webhook"]["done"], what="delivered")
        log = report(url, job_id)["attempts"]
    requests = receiver.of_job(job_id)
    assert {r.id for r in requests} == {failed[0].id}
    assert Webhook(SECRET).verify(requests[-1].body, requests[-1].headers)["data"][
        "result"] == 42
    assert log[0]["outcome"] == "failed" and log[-1]["outcome"] == "delivered"
    assert len(log) == len(requests)


def test_two_front_ends_send_each_delivery_once_in_order(redis: RedisServer,
                                                         receiver: Receiver) -> None:
    with front_end(redis) as first, front_end(redis) as second:
        jobs = [submit(url, receiver, ["started"], y=i)
                for i in range(6) for url in (first, second)]
        for job_id in jobs:
            wait_until(lambda job_id=job_id: report(first, job_id)["webhook"]["done"],
                       what="delivered")
    for job_id in jobs:
        requests = receiver.of_job(job_id)
        assert [r.type for r in requests] == ["job.started", "job.completed"]
        assert len({r.id for r in requests}) == 2  # no delivery sent twice
