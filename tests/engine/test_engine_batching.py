"""Batching: queued jobs of a batched function run together as one call."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import genq


def test_queued_jobs_run_as_batches_and_each_gets_its_own_result(tmp_path: Path) -> None:
    app = genq.App()
    calls: list[list[str]] = []

    @app.function(batch_size=4, batch_wait=0.5)
    def shout(prompt: list[str], times: list[int] = 1) -> list[str]:  # type: ignore[assignment]
        calls.append(list(prompt))
        return [p.upper() * t for p, t in zip(prompt, times, strict=True)]

    with app.local(tmp_path / "db.sqlite3") as client:
        jobs = [client.submit("shout", prompt=f"p{i}", times=1 + i % 2) for i in range(10)]
        results = [job.result(timeout=20) for job in jobs]
    assert results == [f"P{i}" * (1 + i % 2) for i in range(10)]
    assert all(1 <= len(batch) <= 4 for batch in calls)
    assert sorted(p for batch in calls for p in batch) == sorted(f"p{i}" for i in range(10))
    assert len(calls) < 10, "several jobs should have shared a call"


def test_batch_fills_from_jobs_submitted_while_it_waits(tmp_path: Path) -> None:
    app = genq.App()
    sizes: list[int] = []

    @app.function(batch_size=3, batch_wait=2.0)
    def echo(x: list[int]) -> list[int]:
        sizes.append(len(x))
        return x

    with app.local(tmp_path / "db.sqlite3") as client:
        first = client.submit("echo", x=1)
        time.sleep(0.1)  # the first job is claimed and waiting for company
        rest = [client.submit("echo", x=i) for i in (2, 3)]
        assert [j.result(timeout=10) for j in [first, *rest]] == [1, 2, 3]
    assert sizes == [3]  # filled up before its wait ran out


def test_progress_of_a_batch_reaches_every_job(tmp_path: Path) -> None:
    app = genq.App()

    @app.function(batch_size=4, batch_wait=0.3)
    def steps(n: list[int], progress: genq.Progress = genq.Progress()) -> list[int]:
        for _ in progress.tqdm(range(5), desc="denoising"):
            time.sleep(0.01)
        return n

    with app.local(tmp_path / "db.sqlite3") as client:
        jobs = [client.submit("steps", n=i) for i in range(3)]
        for job in jobs:
            job.result(timeout=10)
            progress = [e.data for e in job.events() if e.type is genq.EventType.PROGRESS]
            assert progress[-1]["fraction"] == 1.0
            assert progress[-1]["description"] == "denoising"


def test_cancelling_one_job_of_a_batch_spares_the_others(tmp_path: Path) -> None:
    app = genq.App()
    started = threading.Event()
    release = threading.Event()

    @app.function(batch_size=3, batch_wait=0.3)
    def slow(x: list[int], progress: genq.Progress = genq.Progress()) -> list[int]:
        started.set()
        while not release.is_set():
            progress.check()
            time.sleep(0.01)
        return [v * 10 for v in x]

    with app.local(tmp_path / "db.sqlite3") as client:
        jobs = [client.submit("slow", x=i) for i in range(3)]
        assert started.wait(10)
        time.sleep(0.4)  # past batch_wait: all three are in the call
        jobs[1].cancel()
        release.set()
        assert jobs[0].result(timeout=10) == 0
        assert jobs[2].result(timeout=10) == 20
        with pytest.raises(genq.JobCancelled):
            jobs[1].result(timeout=10)


def test_cancelling_every_job_of_a_batch_stops_the_call(tmp_path: Path) -> None:
    app = genq.App()
    started = threading.Event()
    stopped = threading.Event()

    @app.function(batch_size=2, batch_wait=0.3)
    def forever(x: list[int], progress: genq.Progress = genq.Progress()) -> list[int]:
        started.set()
        try:
            while True:
                progress.check()
                time.sleep(0.01)
        finally:
            stopped.set()

    with app.local(tmp_path / "db.sqlite3") as client:
        jobs = [client.submit("forever", x=i) for i in range(2)]
        assert started.wait(10)
        time.sleep(0.4)
        for job in jobs:
            job.cancel()
        for job in jobs:
            with pytest.raises(genq.JobCancelled):
                job.result(timeout=10)
        assert stopped.wait(10), "the batched call kept running after every job was cancelled"


def test_a_wrong_number_of_results_fails_every_job_clearly(tmp_path: Path) -> None:
    app = genq.App()

    @app.function(batch_size=4, batch_wait=0.3)
    def broken(x: list[int]) -> list[int]:
        return x[:1]

    with app.local(tmp_path / "db.sqlite3") as client:
        jobs = [client.submit("broken", x=i) for i in range(3)]
        for job in jobs:
            with pytest.raises(genq.JobFailed, match="one result per input"):
                job.result(timeout=10)


def test_batched_signatures_are_checked_at_registration() -> None:
    app = genq.App()
    with pytest.raises(TypeError, match="list per parameter"):
        @app.function(batch_size=2)
        def single(x: int) -> int:
            return x

    with pytest.raises(TypeError, match="cannot be batched"):
        @app.function(batch_size=2)
        def gen(x: list[int]):  # type: ignore[no-untyped-def]
            yield x
