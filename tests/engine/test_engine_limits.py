"""Queues with limits, and retries of transient errors.

Per-function concurrency is never exceeded, whatever the kind; a full queue answers
QueueFull with Retry-After instead of growing; jobs that wait too long expire; jobs that
run too long fail with a Timeout (and the sync code really stops); higher priorities
jump the queue; transient errors are retried with backoff, other errors are not.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import genq
from genq import EventType, JobStatus


class Gauge:
    """Counts how many calls are inside a function at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


# -- per-function concurrency ---------------------------------------------------------
def concurrency_app(gauges: dict[str, Gauge]) -> genq.App:
    app = genq.App()

    @app.function(concurrency=3)
    def k_def(i: int) -> int:
        gauges["k_def"].enter()
        try:
            time.sleep(0.05)
            return i
        finally:
            gauges["k_def"].leave()

    @app.function(concurrency=3)
    async def k_async(i: int) -> int:
        gauges["k_async"].enter()
        try:
            await asyncio.sleep(0.05)
            return i
        finally:
            gauges["k_async"].leave()

    @app.function(concurrency=3)
    def k_gen(i: int) -> Iterator[str]:
        gauges["k_gen"].enter()
        try:
            for j in range(3):
                time.sleep(0.02)
                yield f"{i}.{j}"
        finally:
            gauges["k_gen"].leave()

    @app.function(concurrency=3)
    async def k_agen(i: int) -> AsyncIterator[str]:
        gauges["k_agen"].enter()
        try:
            for j in range(3):
                await asyncio.sleep(0.02)
                yield f"{i}.{j}"
        finally:
            gauges["k_agen"].leave()

    @app.function(concurrency=1)
    def single(i: int) -> int:
        gauges["single"].enter()
        try:
            time.sleep(0.02)
            return i
        finally:
            gauges["single"].leave()

    return app


def test_per_function_concurrency_is_never_exceeded(tmp_path: Path) -> None:
    gauges = {name: Gauge() for name in ("k_def", "k_async", "k_gen", "k_agen", "single")}
    app = concurrency_app(gauges)
    with app.local(tmp_path / "db.sqlite3") as client:
        # all five functions flooded at once, with far more jobs in flight than allowed
        jobs = [client.submit(name, i=i) for i in range(15) for name in gauges]
        for job in jobs:
            job.result(timeout=60)
    for name, gauge in gauges.items():
        assert gauge.calls == 15, name
        limit = 1 if name == "single" else 3
        assert gauge.peak <= limit, f"{name}: {gauge.peak} at once, limit {limit}"
        assert gauge.peak == limit, f"{name}: never reached its limit (serialised?)"


def test_a_busy_function_does_not_block_another(tmp_path: Path) -> None:
    app = genq.App()
    release = threading.Event()
    started = threading.Event()

    @app.function(concurrency=1)
    def gpu(x: int) -> int:
        started.set()
        release.wait(30)
        return x

    @app.function(concurrency=1)
    def cpu(x: int) -> int:
        return x + 1

    with app.local(tmp_path / "db.sqlite3") as client:
        blocked = [client.submit("gpu", x=i) for i in range(3)]
        assert started.wait(10)
        assert client.run("cpu", x=1, timeout=30) == 2  # not stuck behind "gpu"
        assert [j.info().status for j in blocked[1:]] == [JobStatus.QUEUED] * 2
        release.set()
        assert [j.result(timeout=30) for j in blocked] == [0, 1, 2]


# -- bounded queues -------------------------------------------------------------------
def test_max_queue_answers_queue_full_with_retry_after(tmp_path: Path) -> None:
    app = genq.App()
    release = threading.Event()
    started = threading.Event()

    @app.function(concurrency=1, max_queue=2)
    def render(prompt: str) -> str:
        started.set()
        release.wait(30)
        return prompt.upper()

    with app.local(tmp_path / "db.sqlite3") as client:
        running = client.submit("render", prompt="running")
        assert started.wait(10)
        queued = [client.submit("render", prompt=p) for p in ("a", "b")]
        with pytest.raises(genq.QueueFull) as full:
            client.submit("render", prompt="c")
        assert full.value.retry_after >= 1
        assert "render" in str(full.value) and "2" in str(full.value)
        assert full.value.detail["max_queue"] == 2
        assert full.value.status == 429
        # refusing the extra job lost none of the accepted ones
        release.set()
        assert running.result(timeout=30) == "RUNNING"
        assert [j.result(timeout=30) for j in queued] == ["A", "B"]
        # and once the queue drained there is room again
        assert client.run("render", prompt="c", timeout=30) == "C"


@pytest.mark.anyio
async def test_max_queue_async_client(tmp_path: Path) -> None:
    app = genq.App()
    release = anyio.Event()
    started = anyio.Event()

    @app.function(concurrency=1, max_queue=1)
    async def chat(message: str) -> str:
        started.set()
        await release.wait()
        return message

    async with app.local(tmp_path / "db.sqlite3") as client:
        first = await client.submit("chat", message="1")
        await started.wait()
        assert (await first.info()).status is JobStatus.RUNNING
        second = await client.submit("chat", message="2")
        with pytest.raises(genq.QueueFull):
            await client.submit("chat", message="3")
        release.set()
        assert [await first.result(timeout=30), await second.result(timeout=30)] == ["1", "2"]


# -- queue timeout ----------------------------------------------------------------------
def test_queue_timeout_expires_a_job_that_waited_too_long(tmp_path: Path) -> None:
    app = genq.App()
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    @app.function(concurrency=1, queue_timeout=0.2)
    def render(prompt: str) -> str:
        ran.append(prompt)
        started.set()
        release.wait(30)
        return prompt

    with app.local(tmp_path / "db.sqlite3") as client:
        blocker = client.submit("render", prompt="blocker")
        assert started.wait(10)
        waiting = client.submit("render", prompt="waiting")
        with pytest.raises(genq.JobExpired):
            waiting.result(timeout=30)
        assert waiting.info().status is JobStatus.EXPIRED
        events = list(waiting.events())
        assert [e.type for e in events] == [EventType.QUEUED, EventType.EXPIRED]
        assert "queue timeout" in events[-1].data["reason"]
        release.set()
        assert blocker.result(timeout=30) == "blocker"
    assert ran == ["blocker"]  # the expired job never ran, not even once it could


# -- execution timeout ------------------------------------------------------------------
def timeout_app(stopped: dict[str, threading.Event], reached_end: list[str]) -> genq.App:
    app = genq.App()

    @app.function(timeout=0.3)
    def t_def(progress: genq.Progress = genq.Progress()) -> str:
        try:
            for _ in range(3000):
                progress(desc="working")
                time.sleep(0.01)
            reached_end.append("t_def")
            return "late"
        finally:
            stopped["t_def"].set()

    @app.function(timeout=0.3)
    async def t_async() -> str:
        try:
            await asyncio.sleep(30)
            reached_end.append("t_async")
            return "late"
        finally:
            stopped["t_async"].set()

    @app.function(timeout=0.3)
    def t_gen() -> Iterator[str]:
        try:
            for i in range(3000):
                time.sleep(0.01)
                yield str(i)
            reached_end.append("t_gen")
        finally:
            stopped["t_gen"].set()

    @app.function(timeout=0.3)
    async def t_agen() -> AsyncIterator[str]:
        try:
            for i in range(3000):
                await asyncio.sleep(0.01)
                yield str(i)
            reached_end.append("t_agen")
        finally:
            stopped["t_agen"].set()

    return app


def test_execution_timeout_fails_the_job_and_stops_the_code(tmp_path: Path) -> None:
    names = ["t_def", "t_async", "t_gen", "t_agen"]
    stopped = {n: threading.Event() for n in names}
    reached_end: list[str] = []
    with timeout_app(stopped, reached_end).local(tmp_path / "db.sqlite3") as client:
        jobs = {n: client.submit(n) for n in names}
        for name, job in jobs.items():
            with pytest.raises(genq.JobFailed) as failed:
                job.result(timeout=30)
            error = failed.value.detail["error"]
            assert error["type"] == "Timeout", name
            assert "0.3" in error["message"]
            info = job.info()
            assert info.status is JobStatus.FAILED and info.error is not None
            assert info.error["type"] == "Timeout"
            assert list(job.events())[-1].type is EventType.FAILED
            assert stopped[name].wait(10), f"{name} kept running after its timeout"
    assert reached_end == []


def test_timeout_of_uncooperative_sync_code_still_ends_the_job(tmp_path: Path) -> None:
    """Sync code that never calls Progress cannot be interrupted, but its job still
    fails on time: the client is not kept waiting for the thread."""
    app = genq.App()
    done = threading.Event()

    @app.function(timeout=0.2)
    def stubborn() -> str:
        time.sleep(1.0)
        done.set()
        return "late"

    with app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("stubborn")
        with pytest.raises(genq.JobFailed, match="Timeout"):
            job.result(timeout=30)
        assert not done.is_set()  # the job ended before the code did
        assert done.wait(10)


# -- priorities ---------------------------------------------------------------------------
def test_higher_priority_jobs_run_first(tmp_path: Path) -> None:
    app = genq.App()
    release = threading.Event()
    started = threading.Event()
    order: list[str] = []

    @app.function(concurrency=1)
    def work(name: str) -> str:
        order.append(name)
        if name == "blocker":
            started.set()
            release.wait(30)
        return name

    with app.local(tmp_path / "db.sqlite3") as client:
        blocker = client.submit("work", name="blocker")
        assert started.wait(10)
        jobs = [
            client.submit("work", name="low-1"),
            client.submit("work", name="high", priority=10),
            client.submit("work", name="low-2"),
            client.submit("work", name="mid", priority=5),
            client.submit("work", name="urgent", priority=100),
            client.submit("work", name="low-3"),
        ]
        # queue positions account for priority: "urgent" went straight to the front
        positions = {j.id: next(iter(j.events())).data["position"] for j in jobs}
        assert positions[jobs[4].id] == 1
        release.set()
        for job in [blocker, *jobs]:
            job.result(timeout=30)
    assert order == ["blocker", "urgent", "high", "mid", "low-1", "low-2", "low-3"]


# -- retries --------------------------------------------------------------------------------
def retry_app(calls: dict[str, int]) -> genq.App:
    app = genq.App()

    @app.function(retries=2, retry_on=(ConnectionError,), retry_backoff=0.1)
    def flaky(fail_times: int) -> str:
        calls["flaky"] += 1
        if calls["flaky"] <= fail_times:
            raise ConnectionResetError(f"blip {calls['flaky']}")  # a ConnectionError
        return f"ok after {calls['flaky']}"

    @app.function(retries=2, retry_on=ConnectionError, retry_backoff=0.01)
    def broken() -> str:
        calls["broken"] += 1
        raise ValueError("bad prompt")

    @app.function(retries=2, retry_on=[ConnectionError], retry_backoff=0.01)
    async def always_down() -> str:
        calls["always_down"] += 1
        raise ConnectionError("server down")

    return app


def test_transient_errors_are_retried_with_backoff(tmp_path: Path) -> None:
    calls = {"flaky": 0, "broken": 0, "always_down": 0}
    with retry_app(calls).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("flaky", fail_times=2)
        assert job.result(timeout=30) == "ok after 3"
        events = list(job.events())
        info = job.info()
    assert calls["flaky"] == 3
    assert info.status is JobStatus.SUCCEEDED and info.attempts == 3
    types = [e.type for e in events]
    assert types.count(EventType.RETRYING) == 2
    assert types.count(EventType.STARTED) == 3
    assert types[-1] is EventType.SUCCEEDED
    retrying = [e for e in events if e.type is EventType.RETRYING]
    assert [r.data["error"]["type"] for r in retrying] == ["ConnectionResetError"] * 2
    assert [r.data["next_attempt"] for r in retrying] == [2, 3]
    # exponential backoff: the delay grows, and the next attempt waited for it
    delays = [r.data["delay"] for r in retrying]
    assert 0 < delays[0] <= delays[1]
    starts = [e for e in events if e.type is EventType.STARTED]
    for retry, next_start in zip(retrying, starts[1:], strict=True):
        assert next_start.ts - retry.ts >= retry.data["delay"] * 0.9


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    calls = {"flaky": 0, "broken": 0, "always_down": 0}
    with retry_app(calls).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("broken")
        with pytest.raises(genq.JobFailed) as failed:
            job.result(timeout=30)
        events = list(job.events())
    assert calls["broken"] == 1
    assert failed.value.detail["error"]["type"] == "ValueError"
    assert "bad prompt" in str(failed.value)
    assert "Traceback" in failed.value.detail["error"]["traceback"]
    assert EventType.RETRYING not in [e.type for e in events]
    assert events[-1].type is EventType.FAILED


@pytest.mark.anyio
async def test_retries_run_out(tmp_path: Path) -> None:
    calls = {"flaky": 0, "broken": 0, "always_down": 0}
    async with retry_app(calls).local(tmp_path / "db.sqlite3") as client:
        job = await client.submit("always_down")
        with pytest.raises(genq.JobFailed, match="server down"):
            await job.result(timeout=30)
        events = [e async for e in job.events()]
        info = await job.info()
    assert calls["always_down"] == 3  # the first attempt and 2 retries, no more
    assert info.attempts == 3 and info.status is JobStatus.FAILED
    assert [e.type for e in events].count(EventType.RETRYING) == 2
    assert events[-1].type is EventType.FAILED


def test_concurrency_holds_while_a_timed_out_sync_call_still_runs(tmp_path: Path) -> None:
    """A timed-out job ends at once, but sync code that never calls Progress cannot be
    stopped: its thread goes on using the GPU, so the function's slot stays taken
    until it returns — the next job must not start beside it."""
    app = genq.App()
    gauge = Gauge()

    @app.function(concurrency=1, timeout=0.1)
    def stubborn(i: int) -> int:
        gauge.enter()
        try:
            time.sleep(0.4)
            return i
        finally:
            gauge.leave()

    with app.local(tmp_path / "db.sqlite3") as client:
        jobs = [client.submit("stubborn", i=i) for i in range(3)]
        for job in jobs:
            with pytest.raises(genq.JobFailed, match="Timeout"):
                job.result(timeout=30)
        deadline = time.monotonic() + 10
        while gauge.now and time.monotonic() < deadline:
            time.sleep(0.01)
    assert gauge.calls == 3
    assert gauge.peak == 1, f"{gauge.peak} calls of a concurrency=1 function ran at once"
