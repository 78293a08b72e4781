"""The SQLite store on a disk that fills up, and under a file that is deleted or replaced.

Real parts only: a 4 MiB tmpfs mounted for each test (so the tests run as root, as CI
does; without ``mount`` they fail and say why), a filler file written until the file
system refuses another byte, a real server over HTTP. What a user must see: a submit
refused with 507 ``storage_full`` is stored nowhere, not even after a restart; a running
stream loses no event and gets no gap; once the filler is gone the next submit works
without a restart. A replaced or deleted file is found (``problem()``, a warning in the
log) and submissions answer 503 ``store_lost``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import genq
from genq.errors import StorageFull
from genq.models import EventType, Job, JobStatus, new_job_id
from genq.store.base import SubmitPolicy
from genq.store.sqlite import SQLiteStore
from tests.support import http_fixtures as web

app = genq.App("disk-tests")
release = threading.Event()  # lets the job holding work()'s only slot end
more_chunks = threading.Event()  # chunks() streams its second part
stop_chunks = threading.Event()  # chunks() stops streaming its second part
end_chunks = threading.Event()  # chunks() returns


@app.function(concurrency=1)
def work(x: int) -> int:
    """x < 0 holds the function's only slot until ``release``: the jobs behind it stay
    queued, so nothing but submissions writes while the disk fills."""
    if x < 0:
        release.wait(60)
    return x


@app.function()
def chunks() -> Iterator[str]:
    """Five chunks; then, once told, 2 KiB chunks (1 MB/s) until told to stop; then the
    end. Slow enough that what the store holds while the disk is full fits once it is
    freed: held events are written before anything else."""
    for i in range(5):
        yield f"c{i}"
    more_chunks.wait(60)
    i = 5
    while not stop_chunks.is_set() and i < 20_000:
        yield f"c{i}:" + "x" * 2048
        time.sleep(0.002)
        i += 1
    end_chunks.wait(60)


@pytest.fixture(autouse=True)
def reset_gates() -> None:
    for gate in (release, more_chunks, stop_chunks, end_chunks):
        gate.clear()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                                 capture_output=True, text=True, timeout=30)
        reason = mounted.stderr.strip() or f"exit status {mounted.returncode}"
    except OSError as exc:
        mounted, reason = None, str(exc)
    if mounted is None or mounted.returncode != 0:
        pytest.fail(f"these tests need a small file system of their own and could not mount "
                    f"one ({reason}); they mount a tmpfs, so run them as root", pytrace=False)
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=True)  # still busy: detach


def fill(disk: Path) -> Path:
    """A file that takes every byte left on ``disk``."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def all_jobs(http: httpx.Client) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        page = http.get("/api/jobs", params=params)
        assert page.status_code == 200, page.text
        jobs += page.json()["jobs"]
        if page.json()["next"] is None:
            return jobs
        params["before"] = page.json()["next"]


def stored_jobs(db: Path) -> list[genq.JobInfo]:
    """Every job in the file, as a restarted server would find it."""
    async def read() -> list[genq.JobInfo]:
        async with SQLiteStore(db) as store:
            return [genq.JobInfo.from_job(j) for j in await store.list_jobs(limit=100_000)]

    return anyio.run(read)


def problem(live: web.LiveServer) -> str | None:
    return live.state.store.problem()


def test_a_full_disk_refuses_submissions_with_507_then_takes_them_again(
        make_server: web.ServerFactory, small_disk: Path) -> None:
    db = small_disk / "genq.sqlite3"
    live = make_server(app, db=db)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        blocker = web.submit(http, "work", x=-1)["id"]
        web.wait_until(lambda: http.get(f"/api/jobs/{blocker}").json()["status"] == "running",
                       what="the job holding work()'s slot to start")
        filler = fill(small_disk)
        accepted: dict[int, str] = {}
        refused: dict[str, Any] | None = None
        for x in range(5_000):  # the WAL may have room left in pages it already holds
            answer = http.post("/api/jobs", json={"function": "work", "input": {"x": x}})
            if answer.status_code != 201:
                refused = web.error_of(answer, 507, "storage_full")
                break
            accepted[x] = answer.json()["id"]
        assert refused is not None, "5,000 submissions fitted on a full 4 MiB disk"
        refused_x = len(accepted)
        assert "is full" in refused["message"] and "nothing was accepted" in refused["message"]
        assert refused["path"] == str(db)
        assert (trouble := problem(live)) is not None and trouble.startswith("disk full since")
        ready = web.error_of(http.get("/readyz"), 503, "store_unavailable")
        assert ready["message"] == problem(live)  # readiness says what is wrong
        # Refused while full, every time, and never listed: not even as queued.
        web.error_of(http.post("/api/jobs", json={"function": "work", "input": {"x": -2}}),
                     507, "storage_full")
        inputs = [j["input"]["x"] for j in all_jobs(http)]
        assert sorted(inputs) == [-1, *accepted]
        queued = http.get("/api/jobs", params={"status": "queued", "limit": 500}).json()
        assert sorted(j["input"]["x"] for j in queued["jobs"]) == sorted(accepted)

        filler.unlink()  # space is back: the next submit works, without a restart
        after = web.submit(http, "work", x=refused_x)
        assert problem(live) is None
        assert http.get("/readyz").status_code == 200
        release.set()
        assert web.finished(http, after["id"])["result"] == refused_x  # it ran, last
        jobs = all_jobs(http)
        assert {j["status"] for j in jobs} == {"succeeded"}
        assert sorted(j["input"]["x"] for j in jobs) == [-1, *accepted, refused_x]
    live.stop()
    stored = stored_jobs(db)  # the file holds exactly what was answered 201
    assert sorted(j.id for j in stored) == sorted([blocker, after["id"], *accepted.values()])
    assert {j.status for j in stored} == {JobStatus.SUCCEEDED}


def test_a_stream_keeps_every_event_in_order_through_a_full_disk(
        make_server: web.ServerFactory, small_disk: Path) -> None:
    live = make_server(app, db=small_disk / "genq.sqlite3")
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job = web.submit(http, "chunks")["id"]
        followed: list[tuple[int, dict[str, Any]]] = []

        def follow() -> None:
            with httpx.Client(base_url=live.url, timeout=120) as own, \
                    own.stream("GET", f"/api/jobs/{job}/events") as response:
                for sse in web.iter_sse(response):
                    if sse.id is not None:
                        followed.append((int(sse.id), sse.payload))
                        if sse.event in ("succeeded", "failed", "cancelled"):
                            return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        web.wait_until(lambda: len(followed) >= 7, what="the first five chunks")  # queued, started
        filler = fill(small_disk)
        more_chunks.set()  # chunks go on until the store finds the disk full
        web.wait_until(lambda: problem(live), what="the store to find the disk full")
        stop_chunks.set()
        held = re.search(r"(\d+) events wait in memory", problem(live) or "")
        assert held and int(held[1]) >= 1  # taken, not refused: written once space returns
        filler.unlink()
        web.wait_until(lambda: problem(live) is None, what="the store to find space again")
        end_chunks.set()
        assert web.finished(http, job)["status"] == "succeeded"
        follower.join(30)
        log = web.event_log(http, job)
    ids = [e["id"] for e in log]
    assert ids == list(range(1, len(log) + 1))  # no gap, nothing twice
    outputs = [e["data"]["chunk"].split(":")[0] for e in log if e["type"] == "output"]
    assert len(outputs) > 5 and outputs == [f"c{i}" for i in range(len(outputs))]
    assert [e["type"] for e in log][-1] == "succeeded"
    assert [i for i, _ in followed] == ids  # the live follower got the same, in order


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_database_file_replaced_or_deleted_under_the_server_is_found(
        make_server: web.ServerFactory, tmp_path: Path, change: str,
        caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "genq.sqlite3"
    live = make_server(app, db=db)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        assert web.finished(http, web.submit(http, "work", x=1)["id"])["result"] == 1
        caplog.set_level(logging.WARNING, logger="genq.store")
        os.rename(db, tmp_path / "moved-aside.sqlite3")
        if change == "replaced":  # a backup put back: same bytes, another file
            (tmp_path / "genq.sqlite3").write_bytes((tmp_path / "moved-aside.sqlite3")
                                                    .read_bytes())
        # Housekeeping finds it (once a second) without anyone asking.
        said = "was replaced by another file" if change == "replaced" else "was deleted"
        web.wait_until(lambda: said in caplog.text, 10, what="the warning")
        trouble = problem(live)
        assert trouble is not None and str(db) in trouble and "restart genq serve" in trouble
        lost = web.error_of(http.post("/api/jobs", json={"function": "work", "input": {"x": 2}}),
                            503, "store_lost")
        assert str(db) in lost["message"] and "restart genq serve" in lost["message"]
        assert lost["path"] == str(db)
        assert "restart genq serve" in web.error_of(http.get("/readyz"), 503,
                                                    "store_unavailable")["message"]
        assert [j["input"]["x"] for j in all_jobs(http)] == [1]


async def fill_until_refused(store: SQLiteStore, disk: Path) -> tuple[Path, list[str]]:
    """Fill ``disk``, then submit until the store refuses: its WAL may still have room
    in pages it already holds. Returns the filler and the jobs it accepted meanwhile."""
    filler = fill(disk)
    accepted = []
    for i in range(5_000):
        try:
            accepted.append((await submit_job(store, "other", x=i)).id)
        except StorageFull:
            return filler, accepted
    raise AssertionError("5,000 submissions fitted on a full 4 MiB disk")


async def submit_job(store: SQLiteStore, function: str = "render", **inputs: Any) -> Job:
    job = Job(id=new_job_id(), function=function, input=inputs)
    return (await store.create_job(job, SubmitPolicy())).job


@pytest.mark.anyio
async def test_writes_a_full_disk_refuses_change_nothing_and_appends_wait_in_memory(
        small_disk: Path) -> None:
    db = small_disk / "genq.sqlite3"
    async with SQLiteStore(db, max_held_bytes=4096) as store:
        queued = await submit_job(store, x=1)
        running = await submit_job(store, x=2)
        claimed = await store.claim(["render"], "w1", lease=60)
        assert claimed is not None and claimed.id == queued.id
        other = await store.claim(["render"], "w1", lease=60)
        assert other is not None and other.id == running.id
        await store.append_events(other.id, [(EventType.OUTPUT, {"chunk": "a"})], other.lease)
        waiting = await submit_job(store, "other", x=-1)
        filler, accepted = await fill_until_refused(store, small_disk)
        assert await store.claim(["other"], "w1", lease=60) is None  # nothing starts

        before = {j.id: j for j in await store.list_jobs(limit=10_000)}
        with pytest.raises(StorageFull):  # cancel of a queued job: it stays queued
            await store.cancel(waiting.id)
        with pytest.raises(StorageFull):  # of a running one: nobody is told to stop
            await store.cancel(other.id)
        with pytest.raises(StorageFull):
            await store.finish(claimed.id, JobStatus.SUCCEEDED, result=1, lease=claimed.lease)
        with pytest.raises(StorageFull):
            await store.retry(claimed.id, 0, {"type": "E", "message": "m"}, claimed.lease)
        with pytest.raises(StorageFull):
            await store.requeue(claimed.id, "shutdown", claimed.lease)
        assert {j.id: j for j in await store.list_jobs(limit=10_000)} == before
        assert await store.queue_position(waiting.id) == 1

        # Appends are taken and held, in order, up to max_held_bytes; then refused
        # with nothing taken (the worker's JobLog keeps them and tries again).
        last = other.last_event_id + 1
        while True:
            try:
                last = await store.append_events(
                    other.id, [(EventType.OUTPUT, {"chunk": "b" * 500})], other.lease)
            except StorageFull:
                break
        now = await store.get_job(other.id)
        assert now is not None and now.last_event_id == last

        filler.unlink()
        assert (await store.finish(other.id, JobStatus.SUCCEEDED, result=2,
                                   lease=other.lease)).status is JobStatus.SUCCEEDED
        assert store.problem() is None
        assert (await store.cancel(waiting.id)).status is JobStatus.CANCELLED
    async with SQLiteStore(db) as reopened:
        events = await reopened.read_events(other.id)
        assert [e.id for e in events] == list(range(1, last + 2))
        assert [e.type for e in events][-1] is EventType.SUCCEEDED
        stored = {j.id: j for j in await reopened.list_jobs(limit=10_000)}
        # Still running at close, as refused finishes left it: recovered as after a crash
        # (its only attempt was lost), not as the refused success.
        assert stored[claimed.id].status is JobStatus.FAILED
        assert stored[waiting.id].status is JobStatus.CANCELLED
        assert len(stored) == len(accepted) + 3
