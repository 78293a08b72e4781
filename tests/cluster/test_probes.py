"""Liveness and readiness of a real ``genq serve --no-workers`` front end on a private
redis-server that is stopped and started again: ``/healthz`` says the process is alive
without asking the store, ``/readyz`` says whether the store answers, within its bound.
docs/api.md, endpoints; docs/redis.md, "What runs where"."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.apps.cluster_app import app
from tests.support.cluster_fixtures import Cluster
from tests.support.http_fixtures import error_of, wait_until
from tests.support.redis_server import RedisServer

# A client bound, not a measurement: the store's own retries last 15 s, so an answer
# that waited for Redis would not come within it.
QUICK_ANSWER = 5.0


def test_liveness_answers_and_readiness_fails_while_redis_is_down(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        cluster = Cluster(redis.url, tmp_path / "procs")
        try:
            front_end = cluster.front_end("fe")
            cluster.worker("w")
            with httpx.Client(base_url=front_end.url, timeout=QUICK_ANSWER) as http:
                ready = http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json() == {  # the whole cluster, as Redis sees it
                    "status": "ready", "store": "redis", "worker": None, "workers": 1,
                    "running": 0, "functions": {
                        name: {"state": "ready", "ready": 1, "loading": 0, "failed": 0}
                        for name in app.functions}}

                redis.stop()
                alive = http.get("/healthz")
                assert alive.status_code == 200 and alive.json()["status"] == "ok"
                error = error_of(http.get("/readyz"), 503, "store_unavailable")
                assert error["store"] == "redis" and "1 s" in error["message"]

                redis.start()
                wait_until(lambda: http.get("/readyz").status_code == 200, 30, 0.2,
                           what="/readyz after Redis came back")
                assert http.get("/healthz").status_code == 200
        finally:
            cluster.close()
