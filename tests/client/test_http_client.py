"""``genq.Client`` / ``genq.AsyncClient`` over a real server: the same surface and the same
answers as ``app.local()``, and robustness the caller never has to code for: streams
that resume through dropped connections and a server restart, submits that are never
duplicated when responses are lost.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import genq
from genq.errors import ConnectionLost
from genq.models import EventType
from tests.apps import http_app
from tests.apps.http_app import app
from tests.support.http_fixtures import (
    ChaosProxy,
    LiveServer,
    ServerFactory,
    event_log,
    free_port,
    seed_jobs,
    wait_until,
)

# -- one scenario, local and remote ------------------------------------------------------


def scenario(client: genq.Client) -> dict[str, Any]:
    """Everything a sync user does, reduced to comparable values."""
    out: dict[str, Any] = {}
    job = client.submit("add", x=2, y=3)
    out["add_events"] = [e.type.value for e in job.events()]
    out["add"] = job.result(timeout=30)
    out["add_info"] = job.info().status.value
    out["run"] = client.run("add", {"x": 40}, y=2, timeout=30)
    out["stream"] = list(client.stream("tokens", n=5))
    out["map"] = client.map("add", [{"x": i, "y": i} for i in range(6)], concurrency=3)
    out["map_errors"] = [type(r).__name__ if isinstance(r, Exception) else r
                         for r in client.map("fail", [{"message": "a"}], return_exceptions=True)]
    art = client.run("image", side=4, timeout=30)
    assert isinstance(art, genq.Artifact)
    out["image"] = (art.content_type, art.name, art.data)

    with pytest.raises(genq.JobFailed) as failed:
        client.run("fail", message="bad", timeout=30)
    out["failed"] = (failed.value.detail["error"]["type"],
                     failed.value.detail["error"]["message"])

    slow = client.submit("slow", seconds=60)
    for event in slow.events():
        if event.type is EventType.STARTED:
            break
    with pytest.raises(genq.ResultTimeout):
        slow.result(timeout=0.2)
    out["cancel"] = client.cancel(slow.id).status.value in ("running", "cancelled")
    with pytest.raises(genq.JobCancelled):
        slow.result(timeout=30)
    out["cancelled_events"] = [e.type.value for e in client.job(slow.id).events()][-1]

    early = client.stream("tokens", n=1000, delay=0.01)
    out["early"] = [next(early) for _ in range(3)]
    early.close()  # leaving a stream early cancels its job

    with pytest.raises(genq.InvalidInput) as invalid:
        client.submit("add", x="abc")
    out["invalid"] = [e["field"] for e in invalid.value.detail["errors"]]
    with pytest.raises(genq.UnknownFunction):
        client.submit("nope")
    with pytest.raises(genq.JobNotFound):
        client.get("no-such-job")
    with pytest.raises(genq.JobNotFound):
        client.result("no-such-job")
    return out


async def async_scenario(client: genq.AsyncClient) -> dict[str, Any]:
    out: dict[str, Any] = {}
    job = await client.submit("add", x=2, y=3)
    out["add_events"] = [e.type.value async for e in job.events()]
    out["add"] = await job.result(timeout=30)
    out["stream"] = [c async for c in client.stream("tokens", n=5)]
    out["map"] = await client.map("add", [{"x": i} for i in range(5)], concurrency=2)
    art = await client.run("image", side=3)
    out["image"] = (art.content_type, art.data)
    with pytest.raises(genq.JobFailed):
        await client.run("fail")
    slow = await client.submit("slow", seconds=60)
    async for event in slow.events():
        if event.type is EventType.STARTED:
            break
    await slow.cancel()
    with pytest.raises(genq.JobCancelled):
        await slow.result(timeout=30)
    out["resumed"] = [e.type.value async for e in job.events(after=1)]
    listed = await client.list_jobs(function="add", status="succeeded")
    out["listed"] = sorted(j.result for j in listed)
    with pytest.raises(genq.InvalidInput):
        await client.submit("add")
    return out


def test_sync_client_matches_local(server: LiveServer, tmp_path: Path) -> None:
    with app.local(tmp_path / "local.sqlite3") as local:
        expected = scenario(local)
    with genq.Client(server.url) as remote:
        got = scenario(remote)
        # The stream left early was cancelled (once its worker noticed).
        wait_until(lambda: remote.list_jobs(function="tokens", status="cancelled"),
                   what="the abandoned stream's job to be cancelled")
    assert got == expected
    assert got["add_events"] == ["queued", "started", "succeeded"]
    assert got["stream"] == ["t0 ", "t1 ", "t2 ", "t3 ", "t4 "]
    assert got["map"] == [0, 2, 4, 6, 8, 10]
    assert got["image"][0] == "image/png" and got["image"][2] == http_app.image(side=4).data
    assert got["failed"] == ("ValueError", "bad")
    assert got["invalid"] == ["x"]


@pytest.mark.anyio
async def test_async_client_matches_local(server: LiveServer, tmp_path: Path) -> None:
    async with app.local(tmp_path / "local.sqlite3") as local:
        expected = await async_scenario(local)
    async with genq.AsyncClient(server.url) as remote:
        got = await async_scenario(remote)
        assert {f["name"] for f in await remote.functions()} == set(app.functions)
    assert got == expected
    assert got["add"] == 5 and got["resumed"] == ["started", "succeeded"]
    assert got["listed"] == [0, 1, 2, 3, 4, 5]


def test_client_errors(idle_server: LiveServer, keyed_server: LiveServer) -> None:
    with genq.Client(idle_server.url) as client:
        client.submit("bounded")
        client.submit("bounded")
        with pytest.raises(genq.QueueFull) as full:
            client.submit("bounded")
        assert full.value.retry_after >= 1
        queued = client.submit("add", x=1)
        with pytest.raises(genq.ResultTimeout):
            queued.result(timeout=0.3)
        assert queued.info().status is genq.JobStatus.QUEUED
        assert client.cancel(queued.id).status is genq.JobStatus.CANCELLED

    with genq.Client(keyed_server.url) as anonymous:
        with pytest.raises(genq.Unauthorized) as denied:
            anonymous.submit("add", x=1)
        assert denied.value.code == "unauthorized" and denied.value.status == 401
    with genq.Client(keyed_server.url, api_key="key-a") as alice, \
            genq.Client(keyed_server.url, api_key="key-b") as bob:
        job = alice.submit("tokens", n=3)
        assert [e.type.value for e in job.events()][-1] == "succeeded"
        with pytest.raises(genq.JobNotFound):
            bob.get(job.id)
        with pytest.raises(genq.JobNotFound):
            list(bob.job(job.id).events())
        assert bob.list_jobs() == []

    dead = f"http://127.0.0.1:{free_port()}"
    with genq.Client(dead, retry_for=0.5) as client, pytest.raises(ConnectionLost):
        client.get("anything")


def test_clients_page_through_jobs_of_one_instant(make_server: ServerFactory,
                                                  tmp_path: Path) -> None:
    """``list_jobs(before=<the last job of a page>)`` pages on (created_at, id) in the
    HTTP client and in app.local(): jobs sharing an instant each come once, newest
    first. The API's ``next`` cursor works as ``before`` too."""
    instant = time.time() - 100
    stamps = [instant] * 7 + [instant - 1] * 2 + [instant + 1]
    remote_db, local_db = tmp_path / "remote.sqlite3", tmp_path / "local.sqlite3"
    remote_expected, local_expected = seed_jobs(remote_db, stamps), seed_jobs(local_db, stamps)
    live = make_server(db=remote_db, workers=False)

    def pages(list_jobs: Any) -> list[str]:
        seen: list[str] = []
        before = None
        for _ in range(20):
            page = list_jobs(limit=3, before=before)
            if not page:
                break
            seen += [j.id for j in page]
            before = page[-1]
        return seen

    with genq.Client(live.url) as client:
        assert pages(client.list_jobs) == remote_expected
        cursor = httpx.get(f"{live.url}/api/jobs", params={"limit": 4}).json()["next"]
        assert [j.id for j in client.list_jobs(before=cursor)] == remote_expected[4:]
        with pytest.raises(genq.BadRequest) as bad:
            client.list_jobs(before="soon")
        assert bad.value.status == 400 and bad.value.code == "bad_request"

    async def in_process() -> None:
        async with app.local(local_db, workers=False) as local:
            seen: list[str] = []
            before = None
            while page := await local.list_jobs(limit=3, before=before):
                seen += [j.id for j in page]
                before = page[-1]
            assert seen == local_expected
            assert [j.id for j in await local.list_jobs(before=instant)] == local_expected[-2:]
            with pytest.raises(ValueError, match="before must be a timestamp"):
                await local.list_jobs(before="soon")

    anyio.run(in_process)


# -- chaos: connections dropped at random points ------------------------------------------
N_CHUNKS = 500


@pytest.mark.anyio
async def test_stream_through_a_dropping_proxy_sees_every_event_once(
        server: LiveServer) -> None:
    with ChaosProxy(server.port, budget=(400, 4000), seed=11) as proxy:
        async with genq.AsyncClient(proxy.url, retry_for=60) as client:
            job = await client.submit("tokens", n=N_CHUNKS, delay=0.002)
            events = [e async for e in job.events()]
            assert await job.result(timeout=60) == "".join(f"t{i} " for i in range(N_CHUNKS))
        drops = proxy.drops
    assert drops >= 5, f"the proxy dropped only {drops} connections"
    ids = [e.id for e in events]
    assert ids == list(range(1, len(events) + 1))  # contiguous: no gap, no duplicate
    chunks = [e.data["chunk"] for e in events if e.type is EventType.OUTPUT]
    assert chunks == [f"t{i} " for i in range(N_CHUNKS)]
    assert events[-1].type is EventType.SUCCEEDED
    with httpx.Client(base_url=server.url) as http:
        log = event_log(http, job.id)
    assert [(e.id, e.type.value, e.data) for e in events] == [
        (e["id"], e["type"], e["data"]) for e in log]


def test_sync_stream_through_a_dropping_proxy(server: LiveServer) -> None:
    with ChaosProxy(server.port, budget=(400, 3000), seed=5) as proxy, \
            genq.Client(proxy.url, retry_for=60) as client:
        chunks = list(client.stream("tokens", n=200, delay=0.002))
        assert proxy.drops >= 5
    assert chunks == [f"t{i} " for i in range(200)]


def test_submit_is_not_duplicated_when_responses_are_lost(server: LiveServer) -> None:
    http_app.calls.clear()
    with ChaosProxy(server.port, drop_responses_first=3) as proxy, \
            genq.Client(proxy.url, retry_for=60) as client:
        job = client.submit("counted", tag="once")
        assert proxy.drops == 3  # three answers were lost after the server acted
        assert job.reason == "idempotent"  # the fourth try found the job the first made
        assert job.result(timeout=30) == "once"
    assert http_app.calls["once"] == 1
    with genq.Client(server.url) as direct:
        assert [j.id for j in direct.list_jobs(function="counted")] == [job.id]


def test_map_through_a_dropping_proxy_runs_each_input_once(server: LiveServer) -> None:
    http_app.calls.clear()
    tags = [f"m{i}" for i in range(20)]
    with ChaosProxy(server.port, budget=(300, 2500), seed=3) as proxy, \
            genq.Client(proxy.url, retry_for=60) as client:
        results = client.map("counted", [{"tag": t} for t in tags], concurrency=5)
        drops = proxy.drops
    assert results == tags
    assert drops >= 5
    assert {t: http_app.calls[t] for t in tags} == dict.fromkeys(tags, 1)
    with genq.Client(server.url) as direct:
        assert len(direct.list_jobs(function="counted", limit=100)) == len(tags)


# -- a server restart in the middle of a stream ------------------------------------------
@pytest.mark.anyio
async def test_stream_survives_a_server_restart(make_server: ServerFactory) -> None:
    live = make_server(shutdown_grace=0.2)
    restarted = threading.Event()

    def restart() -> None:
        live.restart()  # same port, same database
        restarted.set()

    restarter = threading.Thread(target=restart)
    async with genq.AsyncClient(live.url, retry_for=60) as client:
        job = await client.submit("tokens", n=80, delay=0.05)
        events = []
        seen_when_restarted: int | None = None
        async for event in job.events():
            events.append(event)
            if event.type is EventType.OUTPUT and not restarter.is_alive() \
                    and not restarted.is_set() and event.data["chunk"] == "t5 ":
                restarter.start()
            if restarted.is_set() and seen_when_restarted is None:
                seen_when_restarted = len(events)
        await anyio.to_thread.run_sync(restarter.join)
        assert await job.result(timeout=60) == "".join(f"t{i} " for i in range(80))

    assert seen_when_restarted is not None  # the stream went on after the restart
    ids = [e.id for e in events]
    assert ids == list(range(1, len(events) + 1))
    types = [e.type for e in events]
    # The first run was interrupted by the shutdown and run again by the new server.
    assert types.count(EventType.STARTED) == 2
    retrying = events[types.index(EventType.RETRYING)]
    assert "shut down" in retrying.data.get("reason", "")
    assert types[-1] is EventType.SUCCEEDED
    second_run = events[types.index(EventType.RETRYING):]
    assert [e.data["chunk"] for e in second_run if e.type is EventType.OUTPUT] == [
        f"t{i} " for i in range(80)]
    with httpx.Client(base_url=live.url) as http:
        log = event_log(http, job.id)
    assert [(e.id, e.type.value, e.data) for e in events] == [
        (e["id"], e["type"], e["data"]) for e in log]


# -- Ctrl-C while following a stream ------------------------------------------------------
def test_interrupted_sync_stream_leaves_the_client_usable_and_closable(
        idle_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """KeyboardInterrupt while ``job.events()`` waits (a script's Ctrl-C) stops the stream
    on the client's loop: the client still works, closes at once, and logs no errors."""
    client = genq.Client(idle_server.url)
    closed = False
    try:
        job = client.submit("add", x=1)  # never runs: the stream stays idle after "queued"
        waiting = threading.Event()

        def ctrl_c() -> None:
            if waiting.wait(30):  # never interrupt anything but the wait below
                time.sleep(0.3)  # the main thread is blocked in next(events) by now
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        interrupter = threading.Thread(target=ctrl_c)
        interrupter.start()
        events = job.events()
        with pytest.raises(KeyboardInterrupt):
            assert next(events).type is EventType.QUEUED
            waiting.set()
            next(events)
        interrupter.join()
        events.close()
        assert client.get(job.id).status is genq.JobStatus.QUEUED  # still usable

        closer = threading.Thread(target=client.close)
        closer.start()
        closer.join(20)
        closed = not closer.is_alive()
        assert closed, "Client.close() hung on the interrupted stream"
    finally:
        if not closed:
            client.close()
    with genq.Client(idle_server.url) as again:
        assert again.cancel(job.id).status is genq.JobStatus.CANCELLED
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
