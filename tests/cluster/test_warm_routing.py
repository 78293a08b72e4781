"""Warm routing across real ``genq worker`` processes on a private Redis: once two
workers hold different checkpoints, each checkpoint's jobs go to the worker that holds
it (no load), and a job whose warm worker is busy is taken by the other one after its
``warm_wait``, not before and not only once the busy worker is free.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genq.client.sync import Job
from tests.apps import warm_app
from tests.support.cluster_fixtures import Cluster
from tests.support.http_fixtures import wait_until
from tests.support.redis_server import RedisServer


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with RedisServer(tmp_path / "redis") as server:
        cluster = Cluster(server.url, tmp_path / "procs", app="apps.warm_app:app")
        try:
            yield cluster
        finally:
            cluster.close()


def running(job: Job) -> None:
    wait_until(lambda: job.info().status == "running", 30, 0.05,
               what=f"job {job.id} to start")


def outcome(job: Job) -> dict[str, Any]:
    result: dict[str, Any] = job.result(timeout=60)
    return result


def test_jobs_go_to_the_worker_holding_their_model(cluster: Cluster) -> None:
    cluster.worker("w1")
    cluster.worker("w2")
    with warm_app.app.local(cluster.store_url, workers=False) as client:
        # Warm-up: "a" keeps one worker busy, so the other one takes "b".
        first_a = client.submit("generate", checkpoint="a", seconds=1.0)
        running(first_a)
        first_b = client.submit("generate", checkpoint="b")
        a, b = outcome(first_a), outcome(first_b)
        assert a["pid"] != b["pid"] and a["loaded"] and b["loaded"]
        holder = {"a": a["pid"], "b": b["pid"]}

        # Both warm: every job goes where its checkpoint is, and nothing loads again.
        jobs = [client.submit("generate", checkpoint=name, seconds=0.05)
                for name in "abbaabab"]
        done = [(job.info().input["checkpoint"], outcome(job)) for job in jobs]
        assert [(name, r["pid"]) for name, r in done] == [(n, holder[n]) for n, _ in done]
        assert not any(r["loaded"] for _, r in done)

        # "a"'s worker is busy: the next "a" job waits warm_wait for it, then the
        # other worker takes it (and loads "a") rather than wait for the long job.
        long = client.submit("generate", checkpoint="a", seconds=6.0)
        running(long)
        waiting = client.submit("generate", checkpoint="a")
        taken = outcome(waiting)
        assert taken["pid"] == holder["b"] and taken["loaded"]
        info = waiting.info()
        assert info.started_at is not None
        assert info.started_at - info.created_at >= warm_app.WARM_WAIT - 0.01
        assert outcome(long)["pid"] == holder["a"]
        long_info = long.info()
        assert long_info.finished_at is not None and info.started_at < long_info.finished_at
        assert time.time() > info.started_at
