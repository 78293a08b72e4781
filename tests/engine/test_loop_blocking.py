"""An async generator wrapping a blocking sync generator (the TextIteratorStreamer
mistake) on a live server with 4 clients: tokens still arrive one by one, /healthz
still answers, and genq names the function and the fix in the job's log and /metrics."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import httpx

from genq.worker import BLOCK_REPORTED
from tests.apps import blocking_app
from tests.support.http_fixtures import ServerFactory, event_log, finished, iter_sse, submit

N = 40
INTERVAL = 0.01  # 100 tokens/s per stream, as a small model on a GPU


def _follow(url: str, function: str, arrivals: dict[str, list[tuple[float, str]]],
            job_ids: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        job = submit(http, function, n=N, interval=INTERVAL)
        job_ids.append(job["id"])
        got = arrivals.setdefault(job["id"], [])
        with http.stream("GET", f"/api/jobs/{job['id']}/events") as response:
            for message in iter_sse(response):
                if message.event == "output":
                    got.append((message.at, message.payload["data"]["chunk"]))
                elif message.event in ("succeeded", "failed"):
                    return


def _run_clients(url: str, function: str) -> tuple[dict[str, list[tuple[float, str]]],
                                                     list[str], list[float]]:
    """4 clients stream a job each while a fifth asks /healthz every 20 ms."""
    arrivals: dict[str, list[tuple[float, str]]] = {}
    job_ids: list[str] = []
    health: list[float] = []
    clients = [threading.Thread(target=_follow, args=(url, function, arrivals, job_ids))
               for _ in range(4)]
    for client in clients:
        client.start()
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get("/healthz")  # connect outside the measurement
        while any(c.is_alive() for c in clients):
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            health.append(time.perf_counter() - started)
            time.sleep(0.02)
    for client in clients:
        client.join()
    return arrivals, job_ids, health


def _blocked_seconds(http: httpx.Client, function: str) -> float:
    """genq_loop_blocked_seconds_total of ``function`` from /metrics (0 if absent)."""
    prefix = f'genq_loop_blocked_seconds_total{{function="{function}"}} '
    lines = [line for line in http.get("/metrics").text.splitlines()
             if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _warnings(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["message"] for e in events
            if e["type"] == "log" and e["data"]["level"] == "warning"]


def test_blocking_async_generator_streams_and_is_named(make_server: ServerFactory) -> None:
    live = make_server(app=blocking_app.app)
    arrivals, job_ids, health = _run_clients(live.url, "streamer_tokens")
    assert len(job_ids) == 4
    for job_id in job_ids:
        chunks = [chunk for _, chunk in arrivals[job_id]]
        assert chunks == [f"t{i} " for i in range(N)]  # every token once, in order
        # One by one: the tokens reach the client over the job's run time, not at once.
        times = [at for at, _ in arrivals[job_id]]
        separate = sum(1 for a, b in itertools.pairwise(times) if b - a > 0.005)
        assert separate >= N // 4, f"only {separate} of {N} tokens arrived on their own"
    print(f"healthz during 4 blocking streams: max {max(health) * 1000:.1f} ms, "
          f"median {_median(health) * 1000:.1f} ms over {len(health)}")
    assert _median(health) < 0.05

    with httpx.Client(base_url=live.url, timeout=30) as http:
        for job_id in job_ids:
            assert finished(http, job_id)["status"] == "succeeded"
        warned = [w for job_id in job_ids for w in _warnings(event_log(http, job_id))]
        assert warned, "no job was told its function blocks the loop"
        assert "streamer_tokens has kept the event loop stuck" in warned[0]
        assert "iterate_in_thread" in warned[0]
        assert "blocking_app.py" in warned[0]  # the line it stood on
        assert _blocked_seconds(http, "streamer_tokens") >= BLOCK_REPORTED


def test_the_fix_streams_without_blocking(make_server: ServerFactory) -> None:
    live = make_server(app=blocking_app.app)
    arrivals, job_ids, health = _run_clients(live.url, "fixed_tokens")
    for job_id in job_ids:
        assert [chunk for _, chunk in arrivals[job_id]] == [f"t{i} " for i in range(N)]
    print(f"healthz during 4 fixed streams: max {max(health) * 1000:.1f} ms, "
          f"median {_median(health) * 1000:.1f} ms over {len(health)}")
    assert _median(health) < 0.05
    with httpx.Client(base_url=live.url, timeout=30) as http:
        assert all(_warnings(event_log(http, job_id)) == [] for job_id in job_ids)
        # A sample may catch it between awaits; far below what earns a warning.
        assert _blocked_seconds(http, "fixed_tokens") < BLOCK_REPORTED


def test_a_long_block_in_a_coroutine_is_reported(make_server: ServerFactory) -> None:
    live = make_server(app=blocking_app.app)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job = submit(http, "sleeps", seconds=0.5)
        assert finished(http, job["id"])["result"] == "slept"
        # Reported as the call ends, before its result is stored.
        assert _blocked_seconds(http, "sleeps") >= 0.4
        assert "sleeps has kept the event loop stuck" in _warnings(
            event_log(http, job["id"]))[0]
