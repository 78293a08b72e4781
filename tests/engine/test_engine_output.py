"""A job's output is bounded: per chunk, per job, and in what memory holds of it.

A chunk over ``max_chunk_bytes`` or output past ``max_output_bytes`` fails the job with
OutputTooLarge naming the limit, stops the producer, and leaves in the log everything
that came before. A large streamed output is not copied into the result: the result
refers to the log and ``result()`` reads it back whole, the job view holding only its
size; only the attempt that succeeded counts, and a cache hit reads the original's log.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import genq
from genq import EventType, JobStatus

MIB = 1 << 20


def limits_app(produced: list[int], closed: threading.Event) -> genq.App:
    app = genq.App()

    @app.function(max_chunk_bytes=50)
    def big_chunk() -> Iterator[str]:
        try:
            for i, size in enumerate([10, 20, 100, 10]):
                produced.append(i)
                yield str(i) * size
        finally:
            closed.set()

    @app.function(max_output_bytes=35)
    async def too_much() -> AsyncIterator[str]:
        for i in range(10):
            produced.append(i)
            yield str(i) * 10

    @app.function(max_output_bytes=1000)
    def long_result() -> str:
        return "r" * 2000

    return app


def test_a_chunk_over_max_chunk_bytes_fails_the_job_and_stops_the_generator(
        tmp_path: Path) -> None:
    produced: list[int] = []
    closed = threading.Event()
    with limits_app(produced, closed).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("big_chunk")
        with pytest.raises(genq.JobFailed) as failed:
            job.result(timeout=30)
        events = list(job.events())
    error = failed.value.detail["error"]
    assert error["type"] == "OutputTooLarge"
    assert "max_chunk_bytes = 50 bytes" in error["message"]
    assert "output chunk 3 is 100 bytes" in error["message"]
    outputs = [e.data["chunk"] for e in events if e.type is EventType.OUTPUT]
    assert outputs == ["0" * 10, "1" * 20]  # what came before, and not the chunk itself
    assert events[-1].type is EventType.FAILED
    assert closed.wait(10) and produced[-1] <= 3  # stopped, its finally ran


def test_output_past_max_output_bytes_fails_the_job(tmp_path: Path) -> None:
    produced: list[int] = []
    with limits_app(produced, threading.Event()).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("too_much")
        with pytest.raises(genq.JobFailed) as failed:
            job.result(timeout=30)
        events = list(job.events())
    error = failed.value.detail["error"]
    assert error["type"] == "OutputTooLarge" and "max_output_bytes = 35 bytes" in error["message"]
    outputs = [e.data["chunk"] for e in events if e.type is EventType.OUTPUT]
    assert outputs == ["0" * 10, "1" * 10, "2" * 10]
    assert produced == [0, 1, 2, 3]  # the generator was not asked for a fifth chunk


def test_a_returned_result_counts_against_max_output_bytes(tmp_path: Path) -> None:
    with limits_app([], threading.Event()).local(tmp_path / "db.sqlite3") as client:
        with pytest.raises(genq.JobFailed) as failed:
            client.run("long_result", timeout=30)
    assert failed.value.detail["error"]["type"] == "OutputTooLarge"
    assert "max_output_bytes = 1,000 bytes" in failed.value.detail["error"]["message"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        genq.App().function(max_chunk_bytes=0)(lambda: None)


def large_app(attempts: list[int]) -> genq.App:
    app = genq.App()

    @app.function(retries=1, retry_on=(ConnectionError,), retry_backoff=0.01, cache=True)
    def document(parts: int = 3) -> Iterator[str]:
        attempts.append(1)
        letter = "ab"[len(attempts) - 1]
        for i in range(parts):
            yield f"{letter}{i}" + letter * (MIB - 2)
        if len(attempts) == 1:
            raise ConnectionError("the first attempt breaks after its output")

    @app.function()
    def numbers(n: int = 150_000) -> Iterator[dict[str, int]]:
        for i in range(n):
            yield {"i": i}

    return app


def expected_document(letter: str, parts: int = 3) -> str:
    return "".join(f"{letter}{i}" + letter * (MIB - 2) for i in range(parts))


def test_a_large_streamed_result_is_read_from_the_log_of_the_attempt_that_succeeded(
        tmp_path: Path) -> None:
    attempts: list[int] = []
    with large_app(attempts).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("document")
        result = job.result(timeout=60)
        info = job.info()
        events = list(job.events())
        again = client.submit("document")  # a cache hit: it reads the original's log
        cached = again.result(timeout=60)
    assert len(attempts) == 2
    assert result == expected_document("b")  # the second attempt's output only
    assert info.status is JobStatus.SUCCEEDED
    assert info.result is None and info.result_size == 3 * MIB
    assert info.result_url == f"/api/jobs/{job.id}/result/value"
    assert events[-1].data == {"result": None, "result_size": 3 * MIB}  # not copied
    assert again.reason is genq.SubmitReason.CACHED and cached == result


def test_a_large_list_of_chunks_comes_back_as_a_list(tmp_path: Path) -> None:
    with large_app([]).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("numbers")
        assert job.result(timeout=60) == [{"i": i} for i in range(150_000)]
        assert job.info().result_size is not None
