"""Job life cycle: cancellation of every kind, and sync entry points that are safe
anywhere (where a bare ``asyncio.run`` fails: inside a running loop, from many threads,
batches with half-awaited work).

Cancelling a queued job ends it at once; cancelling a running one stops the code —
sync functions at their next Progress call, sync generators through the bridge at their
next yield (their ``finally`` in their own thread), async code the asyncio way — and
``result()`` raises JobCancelled after a single ``cancelled`` terminal event.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

import genq
from genq import EventType, JobStatus

KINDS = ["c_def", "c_gen", "c_async", "c_agen"]


class Rec:
    def __init__(self) -> None:
        self.started = {k: threading.Event() for k in [*KINDS, "c_stubborn"]}
        self.stopped = {k: threading.Event() for k in [*KINDS, "c_stubborn"]}
        self.how: dict[str, str] = {}
        self.reached_end: list[str] = []
        self.body_thread: dict[str, int] = {}
        self.finally_thread: dict[str, int] = {}
        self.overlapped: list[bool] = []


def cancel_app(rec: Rec) -> genq.App:
    app = genq.App()

    @app.function(concurrency=4)
    def c_def(progress: genq.Progress = genq.Progress()) -> str:
        rec.started["c_def"].set()
        try:
            for _ in range(20_000):
                progress(desc="rendering")
                time.sleep(0.005)
            rec.reached_end.append("c_def")
            return "finished"
        except genq.Cancelled:
            rec.how["c_def"] = "genq.Cancelled"
            raise
        finally:
            rec.stopped["c_def"].set()

    @app.function(concurrency=4)
    def c_gen() -> Iterator[str]:
        rec.body_thread["c_gen"] = threading.get_ident()
        rec.started["c_gen"].set()
        try:
            for i in range(20_000):
                time.sleep(0.005)
                yield f"{i} "
            rec.reached_end.append("c_gen")
        except GeneratorExit:
            rec.how["c_gen"] = "GeneratorExit"
            raise
        finally:
            rec.finally_thread["c_gen"] = threading.get_ident()
            rec.stopped["c_gen"].set()

    @app.function(concurrency=4)
    async def c_async() -> str:
        rec.started["c_async"].set()
        try:
            await asyncio.sleep(60)
            rec.reached_end.append("c_async")
            return "finished"
        except asyncio.CancelledError:
            rec.how["c_async"] = "CancelledError"
            raise
        finally:
            rec.stopped["c_async"].set()

    @app.function(concurrency=4)
    async def c_agen() -> AsyncIterator[str]:
        rec.started["c_agen"].set()
        try:
            for i in range(20_000):
                await asyncio.sleep(0.005)
                yield f"{i} "
            rec.reached_end.append("c_agen")
        except (asyncio.CancelledError, GeneratorExit) as exc:
            rec.how["c_agen"] = type(exc).__name__
            raise
        finally:
            rec.stopped["c_agen"].set()

    @app.function(concurrency=1)
    def c_stubborn() -> str:
        """Sync code that never calls Progress: it cannot be interrupted."""
        rec.overlapped.append(rec.started["c_stubborn"].is_set()
                              and not rec.stopped["c_stubborn"].is_set())
        rec.started["c_stubborn"].set()
        time.sleep(0.5)
        rec.stopped["c_stubborn"].set()
        return "finished"

    @app.function(concurrency=1)
    def quick(x: int) -> int:
        return x

    return app


# -- cancelling running jobs of every kind ---------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_cancel_running_job_sync_client(tmp_path: Path, kind: str) -> None:
    rec = Rec()
    with cancel_app(rec).local(tmp_path / "db.sqlite3") as client:
        job = client.submit(kind)
        assert rec.started[kind].wait(10)
        time.sleep(0.05)  # let it get going (outputs, progress)
        state = job.cancel()
        assert state.status in (JobStatus.RUNNING, JobStatus.CANCELLED)
        with pytest.raises(genq.JobCancelled):
            job.result(timeout=30)
        assert job.info().status is JobStatus.CANCELLED
        events = list(job.events())
        # the code was really stopped, by the means that fits its kind
        assert rec.stopped[kind].wait(10)
        assert client.run("quick", x=7, timeout=30) == 7
    types = [e.type for e in events]
    assert types[-1] is EventType.CANCELLED
    assert sum(t.terminal for t in types) == 1
    assert rec.reached_end == []
    expected = {"c_def": "genq.Cancelled", "c_gen": "GeneratorExit",
                "c_async": "CancelledError"}
    if kind in expected:
        assert rec.how[kind] == expected[kind]
    if kind == "c_gen":  # closed in the thread that ran it, not on the loop
        assert rec.finally_thread["c_gen"] == rec.body_thread["c_gen"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_cancel_running_job_async_client(tmp_path: Path, kind: str) -> None:
    rec = Rec()
    async with cancel_app(rec).local(tmp_path / "db.sqlite3") as client:
        job = await client.submit(kind)
        assert await anyio.to_thread.run_sync(rec.started[kind].wait, 10)
        await client.cancel(job.id)
        with pytest.raises(genq.JobCancelled):
            await job.result(timeout=30)
        events = [e async for e in job.events()]
        assert events[-1].type is EventType.CANCELLED
        assert await anyio.to_thread.run_sync(rec.stopped[kind].wait, 10)
    assert rec.reached_end == []


def test_cancel_uncooperative_sync_code_ends_the_job_at_once(tmp_path: Path) -> None:
    rec = Rec()
    with cancel_app(rec).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("c_stubborn")
        assert rec.started["c_stubborn"].wait(10)
        job.cancel()
        with pytest.raises(genq.JobCancelled):
            job.result(timeout=30)
        # the client was not kept waiting for code that cannot be stopped
        assert not rec.stopped["c_stubborn"].is_set()
        # and the next call of that function waits for the abandoned thread to end
        # (concurrency=1 still holds) and then runs
        again = client.submit("c_stubborn")
        assert again.result(timeout=30) == "finished"
    assert rec.overlapped == [False, False]  # the second never ran beside the first


def test_cancel_queued_job_never_runs_it(tmp_path: Path) -> None:
    app = genq.App()
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    @app.function(concurrency=1)
    def render(prompt: str) -> str:
        ran.append(prompt)
        started.set()
        release.wait(30)
        return prompt

    with app.local(tmp_path / "db.sqlite3") as client:
        blocker = client.submit("render", prompt="blocker")
        assert started.wait(10)
        queued = client.submit("render", prompt="queued")
        after = client.submit("render", prompt="after")
        state = queued.cancel()
        assert state.status is JobStatus.CANCELLED  # at once, no worker involved
        with pytest.raises(genq.JobCancelled):
            queued.result(timeout=5)
        assert [e.type for e in queued.events()] == [EventType.QUEUED, EventType.CANCELLED]
        # the job behind it moved up the queue
        assert after.info().status is JobStatus.QUEUED
        release.set()
        assert blocker.result(timeout=30) == "blocker"
        assert after.result(timeout=30) == "after"
        # cancelling a finished job changes nothing
        assert blocker.cancel().status is JobStatus.SUCCEEDED
        assert blocker.result(timeout=5) == "blocker"
    assert ran == ["blocker", "after"]


# -- errors inside the ``with`` / ``async with`` block -------------------------------------
@pytest.mark.anyio
async def test_errors_in_async_with_block_propagate_unwrapped(tmp_path: Path) -> None:
    """A user's error in the block surfaces as itself (not an ExceptionGroup), and the
    engine still shuts down cleanly (the database can be opened again)."""
    app = cancel_app(Rec())
    with pytest.raises(genq.InvalidInput):
        async with app.local(tmp_path / "db.sqlite3") as client:
            await client.submit("quick", x="not a number")
    with pytest.raises(KeyError):
        async with app.local(tmp_path / "db.sqlite3") as client:
            await client.run("quick", x=1, timeout=30)
            raise KeyError("user bug")
    async with app.local(tmp_path / "db.sqlite3") as client:
        assert await client.run("quick", x=2, timeout=30) == 2


def test_errors_in_with_block_propagate_unwrapped(tmp_path: Path) -> None:
    app = cancel_app(Rec())
    with pytest.raises(genq.UnknownFunction), app.local(tmp_path / "db.sqlite3") as client:
        client.submit("nope")
    with pytest.raises(KeyError), app.local(tmp_path / "db.sqlite3") as client:
        raise KeyError("user bug")
    with app.local(tmp_path / "db.sqlite3") as client:
        assert client.run("quick", x=3, timeout=30) == 3


# -- batches --------------------------------------------------------------------------------
def test_map_with_a_failing_item_raises_that_failure(tmp_path: Path) -> None:
    app = genq.App()

    @app.function(concurrency=4)
    def caption(i: int) -> str:
        if i == 3:
            raise ValueError("bad image 3")
        time.sleep(0.02)
        return f"caption {i}"

    with app.local(tmp_path / "db.sqlite3") as client:
        with pytest.raises(genq.JobFailed, match="bad image 3"):
            client.map("caption", [{"i": i} for i in range(8)], concurrency=4)
        results = client.map("caption", [{"i": i} for i in range(8)], return_exceptions=True)
        assert isinstance(results[3], genq.JobFailed)
        assert [r for i, r in enumerate(results) if i != 3] == [
            f"caption {i}" for i in range(8) if i != 3]
        # the engine is fine afterwards
        assert client.run("caption", i=1, timeout=30) == "caption 1"


@pytest.mark.anyio
async def test_map_async_client_failure_is_not_an_exception_group(tmp_path: Path) -> None:
    app = genq.App()

    @app.function(concurrency=4)
    async def caption(i: int) -> str:
        if i == 1:
            raise ValueError("bad image 1")
        await asyncio.sleep(0.01)
        return f"caption {i}"

    async with app.local(tmp_path / "db.sqlite3") as client:
        with pytest.raises(genq.JobFailed):
            await client.map("caption", [{"i": i} for i in range(5)])
        with pytest.raises(genq.InvalidInput):
            await client.map("caption", [{"i": 0}, {"i": "x"}])


# -- the sync client anywhere -----------------------------------------------------------------
def kinds_app() -> genq.App:
    app = genq.App()

    @app.function(concurrency=4)
    def double(x: int) -> int:
        time.sleep(0.005)
        return 2 * x

    @app.function(concurrency=4)
    async def triple(x: int) -> int:
        await asyncio.sleep(0.005)
        return 3 * x

    @app.function(concurrency=4)
    def count(n: int) -> Iterator[str]:
        for i in range(n):
            yield str(i)

    @app.function(concurrency=4)
    async def acount(n: int) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0)
            yield str(i)

    return app


def use_every_kind(client: genq.Client) -> tuple[int, int, list[str], str]:
    return (client.run("double", x=21, timeout=30), client.run("triple", x=5, timeout=30),
            list(client.stream("count", n=4)), client.run("acount", n=3, timeout=30))


def test_sync_client_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A Jupyter cell: sync calls from code already running on an event loop."""
    app = kinds_app()

    async def notebook_cell() -> tuple[int, int, list[str], str]:
        asyncio.get_running_loop()  # there is a running loop here
        with app.local(tmp_path / "db.sqlite3") as client:
            return use_every_kind(client)

    assert asyncio.run(notebook_cell()) == (42, 15, ["0", "1", "2", "3"], "012")

    # the runner opened in one cell and used from a later one, inside the loop
    with app.local(tmp_path / "db.sqlite3") as client:
        async def later_cell() -> tuple[int, int, list[str], str]:
            return use_every_kind(client)

        assert asyncio.run(later_cell()) == (42, 15, ["0", "1", "2", "3"], "012")
        assert asyncio.run(later_cell())[0] == 42  # and again, on a new loop


def test_sync_client_from_16_threads_at_once(tmp_path: Path) -> None:
    app = kinds_app()
    barrier = threading.Barrier(16)

    def worker(t: int) -> list[object]:
        barrier.wait(10)  # all threads hit the client at the same moment
        out: list[object] = []
        for i in range(5):
            x = t * 100 + i
            out.append(client.run("double", x=x, timeout=60))
            out.append(client.run("triple", x=x, timeout=60))
            out.append("".join(client.stream("count", n=i + 1)))
            out.append(client.submit("acount", n=i + 2).result(timeout=60))
        return out

    with app.local(tmp_path / "db.sqlite3") as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))
    for t, out in enumerate(results):
        expected: list[object] = []
        for i in range(5):
            x = t * 100 + i
            expected += [2 * x, 3 * x, "".join(str(j) for j in range(i + 1)),
                         "".join(str(j) for j in range(i + 2))]
        assert out == expected, f"thread {t}"
