"""Streaming that keeps streaming: a blocking producer never holds back the consumer.

A blocking sync generator (the ``TextIteratorStreamer`` fed by ``model.generate`` pattern)
must stream: its first chunk reaches the consumer long before its last one is produced,
the event loop stays responsive while many of them run, and a consumer that stops
stops the producer, whose ``finally`` runs in the producer's own thread.

Times compared here are recorded by the generator and the consumer themselves, and the
assertions are relative (before / after), never absolute budgets — except the loop-lag
probe, whose property *is* latency, with a generous bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import genq
from genq.bridge import SyncIteratorBridge

N_CHUNKS = 10
GAP = 0.05  # seconds the generator sleeps between chunks


class Record:
    """What the generator saw: when it yielded each chunk, and in which thread."""

    def __init__(self) -> None:
        self.yielded_at: list[float] = []
        self.body_thread: int | None = None
        self.finally_thread: int | None = None
        self.finally_ran = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


def db_status(path: Path, wanted: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """Poll the real SQLite file until some job has status ``wanted``: [(id, status)]."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT id, status FROM jobs").fetchall()
        if any(s == wanted for _, s in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def db_events(path: Path, job_id: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [t for (t,) in conn.execute(
            "SELECT type FROM events WHERE job_id=? ORDER BY id", (job_id,))]


def make_app(rec: Record) -> genq.App:
    app = genq.App()

    @app.function(concurrency=8)
    def slow_tokens(n: int = N_CHUNKS, gap: float = GAP) -> Iterator[str]:
        rec.enter()
        try:
            for i in range(n):
                time.sleep(gap)  # blocking, like a model forward pass
                rec.yielded_at.append(time.monotonic())
                yield f"tok{i} "
        finally:
            rec.leave()

    @app.function(concurrency=2)
    def streamer_pattern(n: int = N_CHUNKS) -> Iterator[str]:
        """model.generate in a thread feeds a queue; the generator drains it (HF style)."""
        tokens: queue.Queue[str | None] = queue.Queue()

        def generate() -> None:
            for i in range(n):
                time.sleep(GAP)
                tokens.put(f"w{i} ")
            tokens.put(None)

        producer = threading.Thread(target=generate)
        producer.start()
        try:
            while (token := tokens.get()) is not None:
                rec.yielded_at.append(time.monotonic())
                yield token
        finally:
            producer.join()

    @app.function(concurrency=2)
    def endless() -> Iterator[str]:
        rec.body_thread = threading.get_ident()
        try:
            i = 0
            while True:
                time.sleep(0.01)
                yield f"e{i}"
                i += 1
        finally:
            rec.finally_thread = threading.get_ident()
            rec.finally_ran.set()

    @app.function(concurrency=2)
    async def aendless() -> AsyncIterator[str]:
        try:
            i = 0
            while True:
                await asyncio.sleep(0.01)
                yield f"a{i}"
                i += 1
        finally:
            rec.finally_ran.set()

    return app


# -- first chunk long before the last -------------------------------------------------
def assert_streamed(received_at: list[float], rec: Record) -> None:
    assert len(received_at) == N_CHUNKS and len(rec.yielded_at) == N_CHUNKS
    first_received, last_yielded = received_at[0], rec.yielded_at[-1]
    # the first chunk was in the consumer's hands before the generator even produced
    # its last one, by most of the generation time (not delivered all at the end)
    span = rec.yielded_at[-1] - rec.yielded_at[0]
    assert first_received < last_yielded
    assert last_yielded - first_received > span / 2
    # and most chunks were in the consumer's hands while the generator was still going
    assert sum(t < last_yielded for t in received_at) >= N_CHUNKS // 2


def test_sync_generator_streams_to_sync_client(tmp_path: Path) -> None:
    rec = Record()
    with make_app(rec).local(tmp_path / "db.sqlite3") as client:
        received_at = []
        for chunk in client.stream("slow_tokens"):
            received_at.append(time.monotonic())
            assert chunk.startswith("tok")
    assert_streamed(received_at, rec)


@pytest.mark.anyio
async def test_sync_generator_streams_to_async_client(tmp_path: Path) -> None:
    rec = Record()
    async with make_app(rec).local(tmp_path / "db.sqlite3") as client:
        received_at = []
        async for _chunk in client.stream("slow_tokens"):
            received_at.append(time.monotonic())
    assert_streamed(received_at, rec)


def test_text_iterator_streamer_pattern_streams(tmp_path: Path) -> None:
    rec = Record()
    with make_app(rec).local(tmp_path / "db.sqlite3") as client:
        received_at, text = [], []
        for chunk in client.stream("streamer_pattern"):
            received_at.append(time.monotonic())
            text.append(chunk)
    assert "".join(text) == "".join(f"w{i} " for i in range(N_CHUNKS))
    assert_streamed(received_at, rec)


def test_events_follow_live_while_the_generator_runs(tmp_path: Path) -> None:
    """Following a job's events (not just client.stream) is live too."""
    rec = Record()
    with make_app(rec).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("slow_tokens")
        received_at = [time.monotonic() for e in job.events()
                       if e.type is genq.EventType.OUTPUT]
        assert job.result(timeout=30) == "".join(f"tok{i} " for i in range(N_CHUNKS))
    assert_streamed(received_at, rec)


# -- the loop stays free while blocking generators stream ------------------------------
@pytest.mark.anyio
async def test_event_loop_lag_stays_low_with_8_blocking_generators(tmp_path: Path) -> None:
    rec = Record()
    async with make_app(rec).local(tmp_path / "db.sqlite3") as client:
        lags: list[float] = []
        stop = anyio.Event()

        async def probe() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - before - 0.001)

        async def consume(results: list[str]) -> None:
            async for chunk in client.stream("slow_tokens", n=20, gap=0.02):
                results.append(chunk)

        outputs: list[list[str]] = [[] for _ in range(8)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe)
            async with anyio.create_task_group() as consumers:
                for out in outputs:
                    consumers.start_soon(consume, out)
            stop.set()
    assert all(len(out) == 20 for out in outputs)
    assert rec.peak == 8  # the 8 blocking generators really ran at the same time
    assert len(lags) > 50
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    assert p99 < 0.05, f"event loop lag p99 {p99 * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms"


# -- the consumer stops, the producer stops -------------------------------------------
def test_breaking_out_of_sync_stream_cancels_job_and_runs_finally_in_its_thread(
        tmp_path: Path) -> None:
    rec = Record()
    db = tmp_path / "db.sqlite3"
    with make_app(rec).local(db) as client:
        got = []
        for chunk in client.stream("endless"):
            got.append(chunk)
            if len(got) == 3:
                break
        assert got == ["e0", "e1", "e2"]
        # the generator was closed: its finally ran, in the thread that ran its body
        assert rec.finally_ran.wait(10)
        assert rec.finally_thread == rec.body_thread
        assert rec.finally_thread != threading.get_ident()
        rows = db_status(db, "cancelled")
        assert [s for _, s in rows] == ["cancelled"]
        # and the worker is free again: the next stream runs
        assert client.run("slow_tokens", n=2, gap=0.0, timeout=30) == "tok0 tok1 "
    types = db_events(db, rows[0][0])
    assert types[-1] == "cancelled" and types.count("cancelled") == 1
    assert "succeeded" not in types and "failed" not in types


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["aclosing", "plain break"])
@pytest.mark.parametrize("function", ["endless", "aendless"])
async def test_leaving_async_stream_cancels_job(tmp_path: Path, function: str,
                                                how: str) -> None:
    rec = Record()
    async with make_app(rec).local(tmp_path / "db.sqlite3") as client:
        n = 0
        if how == "aclosing":
            async with contextlib.aclosing(client.stream(function)) as stream:
                async for _ in stream:
                    n += 1
                    if n == 3:
                        break
        else:  # the async generator is finalized by the loop once dropped
            async for _ in client.stream(function):
                n += 1
                if n == 3:
                    break
        assert await anyio.to_thread.run_sync(rec.finally_ran.wait, 10)
        [job] = await client.list_jobs()  # type: ignore[attr-defined]
        with pytest.raises(genq.JobCancelled):
            await client.result(job.id, timeout=10)
        if function == "endless":
            assert rec.finally_thread == rec.body_thread != threading.get_ident()


@pytest.mark.anyio
async def test_cancelling_the_consuming_task_cancels_the_job(tmp_path: Path) -> None:
    """A consumer task cancelled mid-stream (a client that went away) stops the job."""
    rec = Record()
    async with make_app(rec).local(tmp_path / "db.sqlite3") as client:
        got: list[str] = []

        async def consume() -> None:
            async with contextlib.aclosing(client.stream("endless")) as stream:
                async for chunk in stream:
                    got.append(chunk)

        with anyio.move_on_after(0.5):
            await consume()
        assert got  # it was streaming
        assert await anyio.to_thread.run_sync(rec.finally_ran.wait, 10)
        [job] = await client.list_jobs()  # type: ignore[attr-defined]
        with pytest.raises(genq.JobCancelled):
            await client.result(job.id, timeout=10)


# -- the public bridge helper ----------------------------------------------------------
@pytest.mark.anyio
async def test_a_sync_generator_runs_ahead_by_bytes_as_well_as_by_items() -> None:
    """With ``weigh``, the bridge is full at ``max_bytes``: 100 kB items and 300 kB let
    the producer run three items ahead, not the 1,024 its item count would allow."""
    produced = 0

    def big() -> Iterator[str]:
        nonlocal produced
        for _ in range(200):
            produced += 1
            yield "x" * 100_000

    bridge = SyncIteratorBridge(big(), buffer=1024, weigh=len, max_bytes=300_000)
    consumed = 0
    ahead: list[int] = []
    async with contextlib.aclosing(bridge.batches()) as batches:
        async for batch in batches:
            consumed += len(batch)
            await asyncio.sleep(0.01)  # a slow consumer
            ahead.append(produced - consumed)
            if consumed >= 50:
                break
    assert max(ahead) <= 2 * 3 + 1  # a full buffer handed over, one refilled, one in hand


@pytest.mark.anyio
async def test_iterate_in_thread_applies_backpressure_and_closes_in_thread() -> None:
    produced = 0
    finally_thread: list[int] = []
    body_thread: list[int] = []

    def numbers() -> Iterator[int]:
        nonlocal produced
        body_thread.append(threading.get_ident())
        try:
            for i in range(10_000):
                produced += 1
                yield i
        finally:
            finally_thread.append(threading.get_ident())

    consumed = 0
    ahead: list[int] = []
    async with contextlib.aclosing(genq.iterate_in_thread(numbers(), buffer=4)) as items:
        async for item in items:
            assert item == consumed
            consumed += 1
            await asyncio.sleep(0.002)  # a slow consumer
            ahead.append(produced - consumed)
            if consumed == 50:
                break
    # the producer never ran further ahead than the buffer allows: one full buffer
    # handed over to the consumer, one being refilled and the item in hand
    assert max(ahead) <= 2 * 4 + 1
    for _ in range(500):
        if finally_thread:
            break
        await asyncio.sleep(0.01)
    assert finally_thread == body_thread
    assert finally_thread[0] != threading.get_ident()
    assert produced < 100  # stopped soon after the consumer did
