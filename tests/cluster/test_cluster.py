"""genq on Redis across processes: real ``genq serve --no-workers`` front ends, real
``genq worker`` processes and a real redis-server, with kill -9, SIGSTOP and a Redis
restart in the middle of the work. What a user would check: every accepted job
finishes, every output chunk arrives exactly once and in order, a paused worker's late
writes are refused, and limits hold for the cluster as a whole.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from genq import AsyncClient, Client, Restart
from genq.errors import StoreUnavailable
from genq.models import Event, EventType
from genq.store import rules
from tests.support.cluster_fixtures import APP, Cluster, Proc
from tests.support.http_fixtures import (
    ChaosProxy,
    cli_env,
    error_of,
    event_log,
    finished,
    free_port,
    submit,
    wait_until,
)
from tests.support.redis_server import RedisServer

STREAMS, SQUARES, ECHOES = 40, 100, 60
CHUNKS = 40


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendfsync="always") as server:
        yield server


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(redis_server.url, tmp_path / "procs")
    try:
        yield cluster
    finally:
        cluster.close()


def attempts(events: list[Event]) -> list[list[str]]:
    """The output chunks of each attempt, split at its ``started`` event."""
    runs: list[list[str]] = []
    for event in events:
        if event.type is EventType.STARTED:
            runs.append([])
        elif event.type is EventType.OUTPUT:
            runs[-1].append(event.data["chunk"])
    return runs


def stats(front_end: Proc) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{front_end.url}/api/stats", timeout=5).json()
    return body


# -- kill -9 a worker and a front end under load -------------------------------------------
def test_every_job_finishes_and_every_chunk_arrives_once_through_kills(
        cluster: Cluster) -> None:
    fe1, fe2 = cluster.front_end("fe1"), cluster.front_end("fe2")
    workers = [cluster.worker(f"w{i}", "--lease", "3") for i in range(3)]
    health = httpx.get(f"{fe2.url}/readyz").json()
    assert health["store"] == "redis" and health["workers"] == 3  # the whole cluster
    assert health["worker"] is None  # none in the front end itself

    kills: dict[str, Any] = {}

    async def chaos() -> None:
        """Kill a worker while it runs jobs, then a front end while streams flow."""

        def busy_worker() -> Proc | None:
            running = {w["pid"] for w in stats(fe2)["workers"] if w["running"] > 0}
            return next((w for w in workers if w.pid in running), None)

        with anyio.fail_after(60):  # polls other processes: nothing to wait on here
            while (victim := await anyio.to_thread.run_sync(busy_worker)) is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await anyio.sleep(0.2)
        victim.kill()
        kills["worker"] = victim.pid
        with anyio.fail_after(60):
            while not await anyio.to_thread.run_sync(_streams_open, fe1):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        kills["streams on fe1"] = await anyio.to_thread.run_sync(_streams_open, fe1)
        fe1.kill()

    async def follow(client: AsyncClient, tag: str, into: dict[str, list[Event]]) -> None:
        job = await client.submit("chunks", tag=tag, n=CHUNKS, delay=0.025)
        into[job.id] = [event async for event in job.events()]

    async def run(client: AsyncClient, function: str, inputs: dict[str, Any],
                  into: dict[str, tuple[dict[str, Any], Any]]) -> None:
        job = await client.submit(function, inputs)
        into[job.id] = (inputs, await job.result(timeout=120))

    async def drive(url: str) -> tuple[dict[str, list[Event]],
                                       dict[str, tuple[dict[str, Any], Any]]]:
        streams: dict[str, list[Event]] = {}
        results: dict[str, tuple[dict[str, Any], Any]] = {}
        async with AsyncClient(url, retry_for=90, stream_idle_timeout=5) as client:
            with anyio.fail_after(180):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(chaos)
                    for i in range(max(STREAMS, SQUARES, ECHOES)):
                        if i < STREAMS:
                            tg.start_soon(follow, client, f"s{i}", streams)
                        if i < SQUARES:
                            tg.start_soon(run, client, "square", {"x": i}, results)
                        if i < ECHOES:
                            tg.start_soon(run, client, "echo", {"text": f"e{i}"}, results)
        return streams, results

    with ChaosProxy([fe1.port, fe2.port]) as balancer:  # a load balancer over both
        streams, results = anyio.run(drive, balancer.url)

    assert kills["worker"] and kills["streams on fe1"] > 0
    # Every accepted job finished, with the right answer.
    assert len(results) == SQUARES + ECHOES and len(streams) == STREAMS
    for inputs, value in results.values():
        assert value == (inputs["x"] ** 2 if "x" in inputs else inputs["text"])
    retried_streams = restarts = 0
    with httpx.Client(base_url=fe2.url, timeout=10) as http, Client(fe2.url) as replay:
        for job_id, seen in streams.items():
            # Exactly the job's durable log, each event once, in order, ending in success.
            logged = event_log(http, job_id)
            assert [e.id for e in seen] == list(range(1, len(logged) + 1))
            assert [(e.type.value, e.data) for e in seen] == [
                (e["type"], e["data"]) for e in logged]
            assert seen[-1].type is EventType.SUCCEEDED
            tag = _tag_of(seen)
            expected = [f"{tag}:{i}" for i in range(CHUNKS)]
            runs = attempts(seen)
            assert runs[-1] == expected  # the attempt that succeeded streamed everything
            assert all(run == expected[:len(run)] for run in runs)  # none out of order
            retried_streams += len(runs) > 1
            # What stream() and outputs() make of that log (docs/api.md, "Streams and
            # retries"): a genq.Restart ends each abandoned run that had output, and the
            # chunks after the last one are the final run's, exactly.
            chunks = list(replay.job(job_id).outputs())
            marks = [i for i, chunk in enumerate(chunks) if isinstance(chunk, Restart)]
            assert len(marks) == sum(1 for run in runs[:-1] if run)
            assert chunks[marks[-1] + 1 if marks else 0:] == expected
            restarts += len(marks)
    # The killed worker's jobs ran again elsewhere; that is what the retries above show.
    lapsed = [e for events in streams.values() for e in events
              if e.type is EventType.RETRYING and e.data.get("reason") == rules.LEASE_LAPSED]
    assert lapsed, "killing a busy worker should have made its jobs run again"
    assert retried_streams >= 1
    # The figures docs/reliability.md quotes (run with -s to see them).
    print(f"\nchaos: {len(results) + len(streams)} jobs accepted and finished, 0 lost; "
          f"{sum(len(v) for v in streams.values())} stream events delivered exactly once "
          f"in order over {len(streams)} streams; {retried_streams} streams re-ran after "
          f"the worker kill ({len(lapsed)} lease lapses, {restarts} lost runs with "
          f"output marked by a Restart); {kills['streams on fe1']} "
          "streams cut by the front-end kill resumed through the other front end")


def _streams_open(front_end: Proc) -> int:
    try:
        text = httpx.get(f"{front_end.url}/metrics", timeout=2).text
    except httpx.TransportError:
        return 0
    line = next(ln for ln in text.splitlines() if ln.startswith("genq_event_streams "))
    return int(float(line.split()[1]))


def _tag_of(events: list[Event]) -> str:
    first = next(e for e in events if e.type is EventType.OUTPUT)
    tag: str = first.data["chunk"].split(":")[0]
    return tag


# -- a worker paused past its lease ----------------------------------------------------------
def test_a_paused_worker_cannot_write_after_its_lease_lapsed(cluster: Cluster) -> None:
    fe = cluster.front_end("fe")
    first = cluster.worker("w1", "--lease", "2")
    with httpx.Client(base_url=fe.url, timeout=10) as http:
        job_id = submit(http, "paced", n=30, delay=0.1)["id"]
        wait_until(lambda: sum(e["type"] == "output" for e in event_log(http, job_id)) >= 5,
                   30, what="the first worker to stream")
        first.signal(signal.SIGSTOP)  # frozen mid-job: no writes, no lease renewals
        second = cluster.worker("w2", "--lease", "2")
        done = finished(http, job_id)
        assert done["status"] == "succeeded"

        first.signal(signal.SIGCONT)  # it wakes up, still believing the job is its own
        wait_until(lambda: "lost job" in first.log(), 30,
                   what="the paused worker to find its lease gone")
        time.sleep(0.5)
        log = event_log(http, job_id)

    types = [e["type"] for e in log]
    assert types.count("succeeded") == 1 and types[-1] == "succeeded"  # nothing after it
    assert types.count("started") == 2
    retrying = next(e for e in log if e["type"] == "retrying")
    assert retrying["data"]["reason"] == rules.LEASE_LAPSED
    cut = types.index("retrying")
    before = [e["data"]["chunk"] for e in log[:cut] if e["type"] == "output"]
    after = [e["data"]["chunk"] for e in log[cut:] if e["type"] == "output"]
    assert before and all(c.startswith(f"{first.pid}:") for c in before)
    assert after == [f"{second.pid}:{i}" for i in range(30)]  # one whole, clean attempt
    assert first.popen.poll() is None  # refused writes do not crash the worker


def test_a_worker_paused_past_its_lease_runs_its_own_job_again_cleanly(
        cluster: Cluster) -> None:
    """The paused worker, woken, claims the job it lost: the new attempt finishes it
    (no third run) and the worker still runs two jobs at once afterwards."""
    fe = cluster.front_end("fe")
    worker = cluster.worker("w1", "--lease", "2", "--functions", "paced", "--concurrency", "2")
    cluster.worker("keeper", "--lease", "2", "--functions", "square")  # only housekeeps
    with httpx.Client(base_url=fe.url, timeout=10) as http:
        job_id = submit(http, "paced", n=30, delay=0.1)["id"]
        wait_until(lambda: sum(e["type"] == "output" for e in event_log(http, job_id)) >= 5,
                   30, what="the worker to stream")
        worker.signal(signal.SIGSTOP)
        wait_until(lambda: any(e["type"] == "retrying" for e in event_log(http, job_id)),
                   30, what="the keeper to reclaim the job")
        worker.signal(signal.SIGCONT)  # its old attempt wakes; the job is queued for it
        done = finished(http, job_id)
        log = event_log(http, job_id)
        pair = [submit(http, "paced", n=20, delay=0.1)["id"] for _ in range(2)]
        spans = [(j["started_at"], j["finished_at"]) for j in (finished(http, i) for i in pair)]
    assert done["status"] == "succeeded"
    types = [e["type"] for e in log]
    assert types.count("started") == 2 and types.count("succeeded") == 1
    cut = len(types) - types[::-1].index("started")
    assert [e["data"]["chunk"] for e in log[cut:] if e["type"] == "output"] == [
        f"{worker.pid}:{i}" for i in range(30)]
    assert max(s for s, _ in spans) < min(f for _, f in spans)  # both slots at work
    assert "KeyError" not in worker.log() and "Traceback" not in worker.log()


# -- Redis killed and restarted --------------------------------------------------------------
def test_no_accepted_job_is_lost_when_redis_is_killed(
        cluster: Cluster, redis_server: RedisServer) -> None:
    from tests.apps.cluster_app import app

    for i in range(2):
        cluster.worker(f"w{i}", "--lease", "5")
    accepted: list[tuple[str, int]] = []
    refused: list[str] = []
    stop = threading.Event()
    with app.local(redis_server.url, workers=False) as client:

        def submit_steadily() -> None:
            x = 0
            while not stop.is_set():
                x += 1
                try:
                    job = client.submit("square" if x % 4 else "chunks",
                                        {"x": x} if x % 4 else {"tag": f"c{x}", "n": 10,
                                                                "delay": 0.01})
                except StoreUnavailable as exc:  # not accepted: the caller was told
                    refused.append(str(exc))
                    continue
                accepted.append((job.id, x))
                time.sleep(0.01)

        producer = threading.Thread(target=submit_steadily)
        producer.start()
        try:
            wait_until(lambda: len(accepted) >= 50, 60, what="jobs to be accepted")
            redis_server.kill()  # SIGKILL, mid-submission and mid-run
            time.sleep(1.0)
            redis_server.start()  # same port, same data directory: replays its AOF
            count = len(accepted)
            wait_until(lambda: len(accepted) >= count + 50, 60,
                       what="submissions to go on after the restart")
        finally:
            stop.set()
            producer.join(60)

        for job_id, x in accepted:
            job = client.job(job_id)
            value = job.result(timeout=120)
            if x % 4:
                assert value == x * x
            else:
                events = list(job.events())
                assert attempts(events)[-1] == [f"c{x}:{i}" for i in range(10)]
    assert len(accepted) >= 100


# -- Redis down for longer than retry_for -----------------------------------------------------
OUTAGE = 7.0  # seconds Redis is away: over 3 leases and twice the store's retry_for


def test_streams_lose_nothing_through_a_redis_outage_longer_than_retry_for(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """Two streaming jobs (a chunk every 50 ms) while Redis is stopped for 7 s, with
    ``retry_for=2`` and 3 s leases: one ends during the outage, one runs through it.
    Each succeeds once, on its first attempt, with every chunk in its log in order."""
    cluster = Cluster(f"{redis_server.url}?retry_for=2", tmp_path / "procs")
    try:
        fe = cluster.front_end("fe")
        workers = [cluster.worker(f"w{i}", "--lease", "3") for i in range(2)]
        sizes = {"short": 60, "long": 240}  # 3 s: ends while Redis is down; 12 s: through
        with httpx.Client(base_url=fe.url, timeout=10) as http:
            ids = {tag: submit(http, "chunks", tag=tag, n=n, delay=0.05)["id"]
                   for tag, n in sizes.items()}
            wait_until(lambda: all(sum(e["type"] == "output" for e in event_log(http, i)) >= 5
                                   for i in ids.values()), 30, what="both jobs to stream")
            redis_server.stop()
            time.sleep(OUTAGE)
            redis_server.start()  # same port, same data directory
            # The front end's own background calls (the webhook sender) waited retry_for
            # in vain, so its circuit is open: it answers 503 store_unavailable until its
            # next probe (every 0.5 s) finds Redis back, as the test below shows.
            wait_until(lambda: http.get(f"/api/jobs/{ids['long']}").status_code == 200, 30,
                       what="the front end to find Redis back")
            done = {tag: finished(http, job_id) for tag, job_id in ids.items()}
            logs = {tag: event_log(http, job_id) for tag, job_id in ids.items()}
    finally:
        cluster.close()
    for tag, n in sizes.items():
        log = logs[tag]
        assert done[tag]["status"] == "succeeded", done[tag]
        assert [e["id"] for e in log] == list(range(1, len(log) + 1))  # no gap, no repeat
        types = [e["type"] for e in log]
        assert types.count("started") == 1 and "retrying" not in types  # ran once
        assert [e["data"]["chunk"] for e in log if e["type"] == "output"] == [
            f"{tag}:{i}" for i in range(n)]
    for worker in workers:  # the whole log, shutdown included
        text = worker.log_path.read_text(errors="replace")
        assert "Task exception was never retrieved" not in text
        assert "Traceback" not in text


def test_api_calls_fail_fast_while_redis_is_known_to_be_down(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """Once one call has waited ``retry_for`` in vain, the next ones answer 503 at once
    (with Retry-After) instead of each waiting again; with Redis back, calls succeed
    again without a restart of the front end."""
    retry_for = 3.0
    cluster = Cluster(f"{redis_server.url}?retry_for={retry_for:g}", tmp_path / "procs")
    try:
        fe = cluster.front_end("fe")  # no workers: jobs stay queued
        with httpx.Client(base_url=fe.url, timeout=30) as http:
            job_id = submit(http, "square", x=3)["id"]
            redis_server.stop()
            error_of(http.get(f"/api/jobs/{job_id}"), 503, "store_unavailable")  # waited
            calls = [("GET", f"/api/jobs/{job_id}", None), ("GET", "/api/jobs", None),
                     ("POST", "/api/jobs", {"function": "square", "input": {"x": 4}}),
                     ("POST", f"/api/jobs/{job_id}/cancel", None)] * 5
            started = time.monotonic()
            answers = [http.request(method, path, json=body) for method, path, body in calls]
            elapsed = time.monotonic() - started
            redis_server.start()
            wait_until(lambda: http.get(f"/api/jobs/{job_id}").status_code == 200, 30,
                       what="the front end to find Redis back")
            back = http.get(f"/api/jobs/{job_id}").json()
            again = submit(http, "square", x=5)
    finally:
        cluster.close()
    for answer in answers:
        error = error_of(answer, 503, "store_unavailable")
        assert int(answer.headers["Retry-After"]) >= 1 and error["retry_after"] >= 1
    assert elapsed < retry_for, f"20 calls took {elapsed:.1f} s: each one waited"
    assert back["status"] == "queued" and again["status"] == "queued"


# -- a limit for the cluster as a whole ------------------------------------------------------
def test_max_running_holds_across_all_workers(cluster: Cluster) -> None:
    fe = cluster.front_end("fe")
    for i in range(3):  # one job at a time each: 3 could run at once, the limit says 2
        cluster.worker(f"w{i}", "--concurrency", "1")
    with httpx.Client(base_url=fe.url, timeout=10) as http:
        ids = [submit(http, "limited", seconds=0.3)["id"] for _ in range(12)]
        jobs = [finished(http, job_id) for job_id in ids]
    assert all(job["status"] == "succeeded" for job in jobs)
    spans = sorted((job["started_at"], job["finished_at"]) for job in jobs)
    most = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert most == 2  # reached (by two workers together), and never exceeded
    assert len({job["result"] for job in jobs}) >= 2


# -- cancel reaches a worker on another machine --------------------------------------------
def test_a_cancel_through_one_front_end_stops_the_job_on_a_worker(cluster: Cluster) -> None:
    front, other = cluster.front_end("fe1"), cluster.front_end("fe2")
    worker = cluster.worker("w1")
    with httpx.Client(base_url=front.url, timeout=10) as http:
        job_id = submit(http, "paced", n=600, delay=0.05)["id"]  # 30 s if left alone
        wait_until(lambda: any(e["type"] == "output" for e in event_log(http, job_id)), 30,
                   what="the job to stream")
        metrics = httpx.get(f"{other.url}/metrics").text  # any front end: the whole cluster
        assert "genq_workers 1.0" in metrics and 'genq_jobs_running{function="paced"} 1.0' \
            in metrics
        assert httpx.post(f"{other.url}/api/jobs/{job_id}/cancel").json()["status"] in (
            "running", "cancelled")
        done = finished(http, job_id)
        log = event_log(http, job_id)
    assert done["status"] == "cancelled"  # not succeeded: the worker did stop it
    assert [e["type"] for e in log][-1] == "cancelled"
    assert sum(e["type"] == "output" for e in log) < 600
    assert worker.popen.poll() is None


# -- what an operator gets wrong -------------------------------------------------------------
def test_a_worker_says_why_it_cannot_start(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0?retry_for=1"  # nobody listens there
    run = subprocess.run([sys.executable, "-m", "genq.cli", "worker", APP, "--store", dead],
                         capture_output=True, text=True, env=cli_env(), timeout=60)
    assert run.returncode == 6, run.stderr
    assert "cannot open the store" in run.stderr and "unreachable" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "genq.cli", "worker", APP, "--store",
                          "redis://127.0.0.1:1/0", "--functions", "square,nope"],
                         capture_output=True, text=True, env=cli_env(), timeout=60)
    assert run.returncode == 2 and "no function named 'nope'" in run.stderr
