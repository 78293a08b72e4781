"""The SQLite store: the shared Store contract on a real file, plus what is SQLite's own —
one owner process, a file that survives a restart, and recovery after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import genq
from genq.errors import StoreLocked
from genq.models import EventType, JobStatus
from genq.store.base import SubmitPolicy
from genq.store.sqlite import SQLiteStore
from tests.store.store_contract import (
    LEASE,
    StoreContract,
    StoreFactory,
    events_until,
    make_job,
    shape,
)


class TestSQLiteStoreContract(StoreContract):
    @pytest.fixture
    async def store_factory(self, anyio_backend: Any,
                            tmp_path: Path) -> AsyncIterator[StoreFactory]:
        stores: list[SQLiteStore] = []

        async def make(**options: Any) -> SQLiteStore:
            store = SQLiteStore(tmp_path / f"store-{len(stores)}.sqlite3", **options)
            await store.open()
            stores.append(store)
            return store

        yield make
        for store in reversed(stores):
            await store.close()


# -- one owner -------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_second_store_on_an_open_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "genq.sqlite3"
    first = SQLiteStore(path)
    await first.open()
    try:
        second = SQLiteStore(path)
        with pytest.raises(StoreLocked) as caught:
            await second.open()
        err = caught.value
        assert err.status == 503 and err.code == "store_locked"
        assert str(path) in str(err) and str(os.getpid()) in str(err)
        # The refused store did not disturb the owner.
        submitted = await first.create_job(make_job(), SubmitPolicy())
        assert submitted.created
    finally:
        await first.close()
    # Once the owner has closed, the file can be opened again.
    third = SQLiteStore(path)
    await third.open()
    try:
        assert await third.get_job(submitted.job.id) is not None
    finally:
        await third.close()


@pytest.mark.anyio
async def test_async_with_opens_and_closes_the_store(tmp_path: Path) -> None:
    path = tmp_path / "genq.sqlite3"
    async with SQLiteStore(path) as store:
        submitted = await store.create_job(make_job(), SubmitPolicy())
        with pytest.raises(StoreLocked):  # open: it owns the file
            await SQLiteStore(path).open()
    async with SQLiteStore(path) as again:  # closed on the way out: free again
        assert await again.get_job(submitted.job.id) is not None


# -- a clean restart -------------------------------------------------------------------
@pytest.mark.anyio
async def test_reopening_keeps_jobs_events_and_artifacts(tmp_path: Path) -> None:
    path = tmp_path / "genq.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        done = (await store.create_job(make_job("render", idempotency_key="k1",
                                                cache_key="c1", affinity="ckpt:sd15"),
                                       SubmitPolicy())).job
        claimed = await store.claim(["render"], "w1", LEASE)
        assert claimed is not None and claimed.id == done.id
        await store.append_events(done.id, [(EventType.OUTPUT, {"chunk": f"t{i}"})
                                            for i in range(50)], claimed.lease)
        await store.append_events(done.id, [(EventType.PROGRESS, {"fraction": 1.0})],
                                  claimed.lease)
        ref = await store.put_artifact(done.id, "out.png", "image/png", b"\x89PNG-bytes")
        await store.finish(done.id, JobStatus.SUCCEEDED, result=ref.to_dict(),
                           lease=claimed.lease)

        low = (await store.create_job(make_job("render", affinity="ckpt:xl"),
                                      SubmitPolicy())).job
        high = (await store.create_job(make_job("render", priority=3), SubmitPolicy())).job
        before_events = await store.read_events(done.id)
        before_job = await store.get_job(done.id)
    finally:
        await store.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.read_events(done.id) == before_events
        assert len(before_events) == 54
        again = await store.get_job(done.id)
        assert again == before_job
        assert again is not None and again.status is JobStatus.SUCCEEDED
        found = await store.get_artifact(ref.id)
        assert found is not None and found == (ref, b"\x89PNG-bytes")
        # The idempotency key and the cache still answer from the file.
        repeat = await store.create_job(make_job("render", idempotency_key="k1",
                                                 cache_key="c1"), SubmitPolicy())
        assert (repeat.reason, repeat.job.id) == ("idempotent", done.id)
        cached = await store.create_job(make_job("render", cache_key="c1"),
                                        SubmitPolicy(cache_ttl=3600.0))
        assert cached.reason == "cached" and cached.job.result == ref.to_dict()
        # Queued jobs are queued again, in the same order.
        assert await store.queue_depth("render") == 2
        assert await store.queue_position(high.id) == 1
        assert await store.queue_position(low.id) == 2
        first = await store.claim(["render"], "w2", LEASE)
        second = await store.claim(["render"], "w2", LEASE)
        assert [first.id if first else None, second.id if second else None] == [high.id, low.id]
        assert second is not None and second.affinity == "ckpt:xl"  # routing still knows it
        assert again.affinity == "ckpt:sd15"
        events = await events_until(store, low.id, 2)
        assert shape(events) == [(1, "queued"), (2, "started")]  # the log carries on
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_holders_of_a_shared_job_survive_a_restart(tmp_path: Path) -> None:
    """Dedupe tickets are stored with the job: after a restart, one of two submissions
    letting go still leaves the job to the other."""
    path = tmp_path / "genq.sqlite3"
    policy = SubmitPolicy(dedupe=True)
    async with SQLiteStore(path) as store:
        first = await store.create_job(make_job(cache_key="k", ticket="a" * 32), policy)
        second = await store.create_job(make_job(cache_key="k", ticket="b" * 32), policy)
        assert second.job.id == first.job.id
    async with SQLiteStore(path) as store:
        kept = await store.cancel(first.job.id, ticket="a" * 32)
        assert kept.status is JobStatus.QUEUED
        again = await store.create_job(make_job(cache_key="k", ticket="c" * 32), policy)
        assert again.job.id == first.job.id  # still live, still joined
    async with SQLiteStore(path) as store:
        assert (await store.cancel(first.job.id, ticket="b" * 32)).status is JobStatus.QUEUED
        ended = await store.cancel(first.job.id, ticket="c" * 32)
        assert ended.status is JobStatus.CANCELLED


@pytest.mark.anyio
async def test_a_file_from_before_warm_routing_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "genq.sqlite3"
    async with SQLiteStore(path) as store:
        old = (await store.create_job(make_job("render"), SubmitPolicy())).job
    with contextlib.closing(sqlite3.connect(path)) as db:  # as an older genq made it
        db.execute("ALTER TABLE jobs DROP COLUMN affinity")
        db.commit()
    async with SQLiteStore(path) as store:
        new = (await store.create_job(make_job("render", affinity="ckpt:a"),
                                      SubmitPolicy())).job
        first = await store.claim(["render"], "w1", LEASE)
        second = await store.claim(["render"], "w1", LEASE)
        assert first is not None and (first.id, first.affinity) == (old.id, None)
        assert second is not None and (second.id, second.affinity) == (new.id, "ckpt:a")


@pytest.mark.anyio
async def test_a_file_from_before_the_dashboard_totals_counts_its_jobs(
        tmp_path: Path) -> None:
    path = tmp_path / "genq.sqlite3"
    async with SQLiteStore(path) as store:
        for _ in range(2):
            await store.cancel((await store.create_job(make_job("render"),
                                                       SubmitPolicy())).job.id)
        await store.create_job(make_job("render"), SubmitPolicy())  # still queued
    with contextlib.closing(sqlite3.connect(path)) as db:  # as an older genq made it
        db.execute("DROP TABLE finished_totals")
        db.execute("DROP TABLE job_tickets")
        db.commit()
    async with SQLiteStore(path) as store:
        stats = await store.finished_stats(0.0, 10)
        assert stats.totals == {("local", "render", "cancelled"): 2}
        assert len(stats.recent) == 2


@pytest.mark.anyio
async def test_jobs_left_running_are_recovered_on_open(tmp_path: Path) -> None:
    """Jobs a closed store had running (no worker settled them) are settled on open."""
    path = tmp_path / "genq.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        retryable = (await store.create_job(make_job("a", max_attempts=2), SubmitPolicy())).job
        last_try = (await store.create_job(make_job("b", max_attempts=1), SubmitPolicy())).job
        stopping = (await store.create_job(make_job("c", max_attempts=3), SubmitPolicy())).job
        # Started within its queue timeout, which has passed by the time of the restart.
        timed = (await store.create_job(make_job("d", max_attempts=2,
                                                 expires_at=time.time() + 0.2),
                                        SubmitPolicy())).job
        leases = {}
        for fn in ("a", "b", "c", "d"):
            claimed = await store.claim([fn], "w1", LEASE)
            assert claimed is not None
            leases[claimed.id] = claimed.lease
        await store.append_events(retryable.id, [(EventType.OUTPUT, {"chunk": "x"})],
                                  leases[retryable.id])
        await store.cancel(stopping.id)
    finally:
        await store.close()
    await anyio.sleep(0.25)

    store = SQLiteStore(path)
    await store.open()
    try:
        job = await store.get_job(retryable.id)
        assert job is not None and job.status is JobStatus.QUEUED and job.attempts == 1
        events = await store.read_events(retryable.id)
        assert shape(events) == [(1, "queued"), (2, "started"), (3, "output"), (4, "retrying")]
        assert events[3].data["reason"] == "worker lost"
        again = await store.claim(["a"], "w2", LEASE)
        assert again is not None and again.id == retryable.id and again.attempts == 2

        failed = await store.get_job(last_try.id)
        assert failed is not None and failed.status is JobStatus.FAILED
        assert failed.error is not None and failed.error["type"] == "WorkerLost"
        assert shape(await store.read_events(last_try.id))[-1] == (3, "failed")

        cancelled = await store.get_job(stopping.id)
        assert cancelled is not None and cancelled.status is JobStatus.CANCELLED

        await store.housekeep(time.time())
        resumed = await store.claim(["d"], "w2", LEASE)  # retried, not expired
        assert resumed is not None and resumed.id == timed.id and resumed.attempts == 2
    finally:
        await store.close()


@pytest.mark.anyio
async def test_followers_end_quietly_when_the_store_closes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "genq.sqlite3")
    await store.open()
    job = (await store.create_job(make_job(), SubmitPolicy())).job
    seen: list[int] = []
    ended = anyio.Event()

    async def follow() -> None:
        async for batch in store.follow(job.id):
            seen.extend(e.id for e in batch)
        ended.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.02)
            assert seen == [1]  # following, waiting for more
            await store.close()
            await ended.wait()


# -- indexed reads ---------------------------------------------------------------------
@pytest.mark.anyio
async def test_listing_and_retention_queries_read_an_index(tmp_path: Path) -> None:
    """Every query behind GET /api/jobs (one owner's jobs, by function and/or status, a
    page ``before`` a time or a (time, id) cursor) and the retention sweep searches an
    index in the order it answers: no scan of the jobs table and no sort, however many
    jobs it holds."""
    import sqlite3

    path = tmp_path / "genq.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        for i in range(30):
            job = make_job("render" if i % 2 else "caption", owner=f"user{i % 3}")
            await store.create_job(job, SubmitPolicy())
            if i % 4:
                await store.cancel(job.id)
        queries: list[str] = []
        reader = store._reader
        assert reader is not None
        reader.set_trace_callback(queries.append)
        for owner in ("user1", None):
            for function in ("render", None):
                for status in (JobStatus.CANCELLED, None):
                    for before, before_id in ((time.time(), None), (None, None),
                                              (time.time(), "f" * 32)):
                        await store.list_jobs(owner=owner, function=function, status=status,
                                              before=before, before_id=before_id)
        await store.purge_finished(time.time() - 3600, 100)
        reader.set_trace_callback(None)
    finally:
        await store.close()
    selects = [q for q in queries if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 25
    with sqlite3.connect(path) as conn:
        for sql in selects:
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            owner_given = "owner=" in sql
            # Without an owner (no API call lists every owner's jobs), the newest-first
            # walk of jobs_by_created is still an index, in order.
            assert "SEARCH jobs USING" in plan or (
                not owner_given and "SCAN jobs USING INDEX jobs_by_created_id" in plan), (
                    sql, plan)
            assert "TEMP B-TREE" not in plan, (sql, plan)


# -- live followers from memory ----------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("buffer", [{"follow_buffer": 16}, {"follow_buffer_bytes": 220}],
                         ids=["events", "bytes"])
async def test_followers_slower_than_the_writer_overflow_and_catch_up(
        tmp_path: Path, buffer: dict[str, int]) -> None:
    """Buffers of 16 events (or of 220 bytes: 16 events of ~14 bytes) against a writer
    of batches up to 40: the slow followers' buffers overflow again and again, each
    time they read the file from their last id and return to the feed; every one still
    gets every event once, in order, and the fast followers get the very same log."""
    store = SQLiteStore(tmp_path / "genq.sqlite3", **buffer)
    await store.open()
    try:
        job = await store.create_job(make_job(), SubmitPolicy())
        claimed = await store.claim(["render"], "w1", LEASE)
        assert claimed is not None and claimed.lease is not None
        lease = claimed.lease
        got: dict[str, list[list[int]]] = {}

        async def follow(name: str, pause: float) -> None:
            batches = got.setdefault(name, [])
            async for batch in store.follow(job.job.id):
                batches.append([e.id for e in batch])
                await anyio.sleep(pause)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(follow, f"slow{i}", 0.02)
                    tg.start_soon(follow, f"fast{i}", 0)
                await anyio.sleep(0.01)
                written = 2
                for i in range(120):
                    n = 1 + (i * 7) % 40
                    await store.append_events(job.job.id, [
                        (EventType.OUTPUT, {"chunk": written + j}) for j in range(n)], lease)
                    written += n
                    if i % 4 == 0:
                        await anyio.sleep(0.005)
                await store.finish(job.job.id, JobStatus.SUCCEEDED, lease=lease)
        total = written + 1
        for name, batches in got.items():
            assert [i for b in batches for i in b] == list(range(1, total + 1)), name
        # The slow ones fell behind: some of their batches are larger than a buffer,
        # which only a read of the file (up to 1,000 rows) hands out.
        assert all(max(map(len, got[f"slow{i}"])) > 16 for i in range(3))
    finally:
        await store.close()


# -- crash recovery with a real kill -9 ------------------------------------------------
CHILD = textwrap.dedent('''
    """Runs an engine with jobs in every state, reports what is committed, then waits to
    be killed."""
    import json
    import sys
    import time
    from collections.abc import Iterator

    import genq

    app = genq.App()

    @app.function(concurrency=1, retries=1)
    def slow(n: int) -> int:
        time.sleep(3600)
        return n

    @app.function(concurrency=1)
    def fragile(n: int) -> int:
        time.sleep(3600)
        return n

    @app.function(retries=1)
    def stream(n: int) -> Iterator[str]:
        for i in range(n):
            yield f"before-{i}"
        time.sleep(3600)

    @app.function
    def quick(n: int) -> int:
        return n * 10

    def observe(job, done):
        """Events of ``job`` as delivered by events() (committed ones only), until done."""
        seen = []
        for event in job.events():
            seen.append({"id": event.id, "type": event.type.value, "data": event.data})
            if done(seen):
                break
        return seen

    def has(kind, count=1):
        return lambda seen: sum(e["type"] == kind for e in seen) >= count

    with app.local(sys.argv[1]) as client:
        finished = client.submit("quick", n=4)
        assert finished.result(timeout=30) == 40
        slow = [client.submit("slow", n=i) for i in range(3)]
        fragile = [client.submit("fragile", n=i) for i in range(2)]
        streaming = client.submit("stream", n=5)
        jobs = {
            "finished": (finished, lambda seen: False),  # until its terminal event
            "slow_running": (slow[0], has("started")),
            "slow_queued_1": (slow[1], has("queued")),
            "slow_queued_2": (slow[2], has("queued")),
            "fragile_running": (fragile[0], has("started")),
            "fragile_queued": (fragile[1], has("queued")),
            "streaming": (streaming, has("output", 5)),
        }
        report = {name: {"id": job.id, "events": observe(job, done)}
                  for name, (job, done) in jobs.items()}
        for name in ("slow_queued_1", "slow_queued_2", "fragile_queued"):
            assert client.get(report[name]["id"]).status.value == "queued", name
        print("READY " + json.dumps(report), flush=True)
        time.sleep(3600)  # killed here, with jobs running, queued and streaming
''')


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's first line of output, or "" if it ended or ``timeout`` passed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            buf += chunk
    return buf.decode()


@pytest.fixture
def crashed_child(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Run the child engine until it reports READY, then SIGKILL it. Never leaves it alive."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "crash.sqlite3"
    err_path = tmp_path / "child.err"
    with err_path.open("wb") as err, subprocess.Popen(
        [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, stderr=err,
        cwd=tmp_path,
    ) as proc:
        try:
            line = _read_line(proc, timeout=60.0)
            assert line.startswith("READY "), (
                f"the child never got ready (output {line!r}); its stderr:\n"
                + err_path.read_text(errors="replace"))
            report: dict[str, Any] = json.loads(line.removeprefix("READY "))
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    yield db, report


def _restarted_app() -> genq.App:
    """The same functions as the child's (names and options), now quick to finish."""
    app = genq.App()

    @app.function(concurrency=1, retries=1)
    def slow(n: int) -> int:
        return n

    @app.function(concurrency=1)
    def fragile(n: int) -> int:
        return n

    @app.function(retries=1)
    def stream(n: int) -> Iterator[str]:
        for i in range(n):
            yield f"after-{i}"

    @app.function
    def quick(n: int) -> int:
        return n * 10

    return app


def test_crash_recovery_after_kill_9(crashed_child: tuple[Path, dict[str, Any]]) -> None:
    db, report = crashed_child
    ids = {name: entry["id"] for name, entry in report.items()}
    seen = {name: entry["events"] for name, entry in report.items()}
    # What the child saw committed before it died.
    assert [e["type"] for e in seen["finished"]] == ["queued", "started", "succeeded"]
    assert [e["type"] for e in seen["slow_running"]] == ["queued", "started"]
    assert [e["data"].get("chunk") for e in seen["streaming"]
            if e["type"] == "output"] == [f"before-{i}" for i in range(5)]

    async def restart() -> None:
        app = _restarted_app()
        async with app.local(db) as client:
            store = client.transport.jobs.store
            final = {}
            with anyio.fail_after(30):
                for name, job_id in ids.items():
                    final[name] = await store.wait_terminal(job_id)
            logs = {name: await store.read_events(job_id) for name, job_id in ids.items()}

        # Every event committed before the crash is still there, unchanged.
        for name, events in seen.items():
            kept = [{"id": e.id, "type": e.type.value, "data": e.data}
                    for e in logs[name][:len(events)]]
            assert kept == events, name
            assert [e.id for e in logs[name]] == list(range(1, len(logs[name]) + 1)), name

        # The finished job is as it was.
        assert final["finished"].status is JobStatus.SUCCEEDED
        assert final["finished"].result == 40
        assert len(logs["finished"]) == 3

        # Queued jobs run to success after the restart, each on its first attempt.
        for name in ("slow_queued_1", "slow_queued_2", "fragile_queued"):
            job = final[name]
            assert job.status is JobStatus.SUCCEEDED and job.attempts == 1, name
            assert shape(logs[name]) == [(1, "queued"), (2, "started"), (3, "succeeded")]
        assert final["slow_queued_2"].result == 2 and final["fragile_queued"].result == 1

        # Running with a retry left: retried ("worker lost"), then succeeded.
        job = final["slow_running"]
        assert job.status is JobStatus.SUCCEEDED and job.result == 0 and job.attempts == 2
        assert shape(logs["slow_running"]) == [(1, "queued"), (2, "started"), (3, "retrying"),
                                               (4, "started"), (5, "succeeded")]
        assert logs["slow_running"][2].data["reason"] == "worker lost"

        # Running with no retries: failed, saying why.
        job = final["fragile_running"]
        assert job.status is JobStatus.FAILED and job.attempts == 1
        assert job.error is not None and job.error["type"] == "WorkerLost"
        assert shape(logs["fragile_running"]) == [(1, "queued"), (2, "started"), (3, "failed")]
        assert logs["fragile_running"][2].data["error"]["type"] == "WorkerLost"

        # The stream keeps the chunks it emitted before the crash, then starts over.
        job = final["streaming"]
        assert job.status is JobStatus.SUCCEEDED and job.attempts == 2
        log = logs["streaming"]
        crashed_at = len(seen["streaming"])
        assert log[crashed_at].type is EventType.RETRYING
        assert log[crashed_at].data["reason"] == "worker lost"
        assert log[crashed_at + 1].type is EventType.STARTED
        assert log[crashed_at + 1].data["attempt"] == 2
        chunks = [e.data["chunk"] for e in log if e.type is EventType.OUTPUT]
        assert chunks == [f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)]
        assert log[-1].type is EventType.SUCCEEDED
        assert job.result == "".join(f"after-{i}" for i in range(5))

    anyio.run(restart)
