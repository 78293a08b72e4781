"""The four kinds of job function, through both clients; input validation; binary results.

Every kind (def, async def, generator, async generator) must run to completion and give
its result and its streamed chunks to the sync client (``with app.local()``) and to the
async client (``async with app.local()``) alike. Bad input is refused with an error that
names the field; binary values come back as artifacts with their content type.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import genq
from genq import EventType

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def make_app() -> genq.App:
    app = genq.App()

    @app.function(concurrency=2)
    def plain(x: int, label: str = "x") -> dict[str, Any]:
        time.sleep(0.01)  # really blocking: it must be in a thread, not on the loop
        return {"label": label, "double": x * 2, "thread": threading.current_thread().name}

    @app.function(concurrency=2)
    async def coro(x: int) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"plus_one": x + 1}

    @app.function(concurrency=2)
    def gen(n: int) -> Iterator[str]:
        for i in range(n):
            time.sleep(0.002)
            yield f"g{i} "

    @app.function(concurrency=2)
    async def agen(n: int) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0.002)
            yield f"a{i} "

    @app.function
    def gen_returns(n: int) -> Iterator[str]:
        for i in range(n):
            yield str(i)
        return f"returned after {n}"

    @app.function
    def as_bytes() -> bytes:
        return PNG

    @app.function
    def as_image() -> genq.Image:
        return genq.Image(PNG)

    @app.function
    def as_file() -> genq.File:
        return genq.File(b"a,b\n1,2\n", name="table.csv", content_type="text/csv")

    @app.function
    def mixed() -> dict[str, Any]:
        return {"caption": "a fox", "image": genq.Image(PNG, name="fox.png")}

    @app.function
    def images(n: int) -> Iterator[genq.Image]:
        for i in range(n):
            yield genq.Image(PNG + bytes([i]), name=f"step{i}.png")

    @app.function
    def typed(prompt: str, steps: int = 20, scale: float = 7.5) -> str:
        return f"{prompt}/{steps}/{scale}"

    @app.function
    def not_json() -> object:
        return object()

    return app


# -- the four kinds through the sync client ------------------------------------------
def test_four_kinds_sync_client(tmp_path: Path) -> None:
    app = make_app()
    with app.local(tmp_path / "db.sqlite3") as client:
        out = client.run("plain", x=21, label="answer", timeout=30)
        assert out["double"] == 42 and out["label"] == "answer"
        assert out["thread"] != threading.current_thread().name  # ran in a worker thread
        assert client.run("coro", {"x": 1}, timeout=30) == {"plus_one": 2}

        # generators: streamed chunk by chunk, and their joined text is the result
        assert list(client.stream("gen", n=5)) == [f"g{i} " for i in range(5)]
        assert list(client.stream("agen", n=5)) == [f"a{i} " for i in range(5)]
        assert client.run("gen", n=3, timeout=30) == "g0 g1 g2 "
        assert client.run("agen", n=3, timeout=30) == "a0 a1 a2 "
        # a generator's ``return`` value is its result
        assert client.run("gen_returns", n=3, timeout=30) == "returned after 3"

        # the event log of a generator job: queued, started, outputs in order, succeeded
        job = client.submit("gen", n=4)
        events = list(job.events())
        types = [e.type for e in events]
        assert types[0] is EventType.QUEUED and types[1] is EventType.STARTED
        assert types[-1] is EventType.SUCCEEDED
        assert [e.data["chunk"] for e in events if e.type is EventType.OUTPUT] == [
            "g0 ", "g1 ", "g2 ", "g3 "]
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert job.result(timeout=30) == "g0 g1 g2 g3 "
        assert job.info().status is genq.JobStatus.SUCCEEDED

        # map over all kinds at once, results in input order
        assert client.map("coro", [{"x": i} for i in range(10)], concurrency=4) == [
            {"plus_one": i + 1} for i in range(10)]
        assert [r["double"] for r in client.map("plain", [{"x": i} for i in range(6)])] == [
            i * 2 for i in range(6)]


# -- the four kinds through the async client -----------------------------------------
@pytest.mark.anyio
async def test_four_kinds_async_client(tmp_path: Path) -> None:
    app = make_app()
    async with app.local(tmp_path / "db.sqlite3") as client:
        out = await client.run("plain", x=5, timeout=30)
        assert out["double"] == 10
        assert out["thread"] != threading.current_thread().name
        assert await client.run("coro", x=41, timeout=30) == {"plus_one": 42}
        assert [c async for c in client.stream("gen", n=4)] == [f"g{i} " for i in range(4)]
        assert [c async for c in client.stream("agen", n=4)] == [f"a{i} " for i in range(4)]
        assert await client.run("gen", n=2, timeout=30) == "g0 g1 "
        assert await client.run("agen", n=2, timeout=30) == "a0 a1 "
        assert await client.run("gen_returns", n=2, timeout=30) == "returned after 2"

        job = await client.submit("agen", n=3)
        events = [e async for e in job.events()]
        assert [e.data["chunk"] for e in events if e.type is EventType.OUTPUT] == [
            "a0 ", "a1 ", "a2 "]
        assert events[-1].type is EventType.SUCCEEDED
        assert await job.result(timeout=30) == "a0 a1 a2 "

        results = await client.map("agen", [{"n": i} for i in range(1, 6)], concurrency=3)
        assert results == ["".join(f"a{j} " for j in range(i)) for i in range(1, 6)]


@pytest.mark.anyio
async def test_async_client_keeps_its_loop_free_while_sync_kinds_run(tmp_path: Path) -> None:
    """Sync functions and generators run in threads: the caller's loop keeps ticking."""
    app = genq.App()

    @app.function
    def block(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    @app.function
    def block_gen(seconds: float) -> Iterator[str]:
        time.sleep(seconds)
        yield "done"

    async with app.local(tmp_path / "db.sqlite3") as client:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            assert await client.run("block", seconds=0.5, timeout=30) == "done"
            assert await client.run("block_gen", seconds=0.5, timeout=30) == "done"
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # ~100 ticks if the loop was free for the whole second; 0-2 if it was blocked
        assert ticks > 20


# -- input validation ----------------------------------------------------------------
def test_invalid_input_names_the_field(tmp_path: Path) -> None:
    app = make_app()
    with app.local(tmp_path / "db.sqlite3") as client:
        with pytest.raises(genq.InvalidInput) as wrong_type:
            client.submit("typed", prompt="fox", steps="many")
        assert "steps" in str(wrong_type.value)
        assert [e["field"] for e in wrong_type.value.detail["errors"]] == ["steps"]

        with pytest.raises(genq.InvalidInput) as missing:
            client.submit("typed", steps=3)
        assert "prompt" in str(missing.value)
        assert missing.value.detail["errors"][0]["field"] == "prompt"

        with pytest.raises(genq.InvalidInput) as unknown:
            client.submit("typed", prompt="fox", stepz=3)
        assert "stepz" in str(unknown.value)

        with pytest.raises(genq.InvalidInput) as several:
            client.submit("typed", steps="x", scale="y")
        message = str(several.value)
        assert "prompt" in message and "steps" in message and "scale" in message

        with pytest.raises(genq.UnknownFunction) as nofn:
            client.submit("no_such_function", prompt="fox")
        assert "no_such_function" in str(nofn.value)

        # nothing was queued by the refused submissions; valid input still works and is
        # coerced to the declared types
        assert client.run("typed", prompt="fox", steps="3", timeout=30) == "fox/3/7.5"


@pytest.mark.anyio
async def test_invalid_input_async_client(tmp_path: Path) -> None:
    app = make_app()
    async with app.local(tmp_path / "db.sqlite3") as client:
        with pytest.raises(genq.InvalidInput, match="steps"):
            await client.submit("typed", prompt="fox", steps=[1, 2])
        with pytest.raises(genq.UnknownFunction):
            await client.submit("nope")
        assert await client.list_jobs() == []  # type: ignore[attr-defined]


# -- binary results and chunks ---------------------------------------------------------
def test_binary_results_become_artifacts(tmp_path: Path) -> None:
    app = make_app()
    with app.local(tmp_path / "db.sqlite3") as client:
        raw = client.run("as_bytes", timeout=30)
        assert isinstance(raw, genq.Artifact)
        assert raw.data == PNG and raw.content_type == "application/octet-stream"

        image = client.run("as_image", timeout=30)
        assert isinstance(image, genq.Artifact)
        assert image.data == PNG and image.content_type == "image/png"
        saved = image.save(tmp_path / "out.png")
        assert saved.read_bytes() == PNG

        csv = client.run("as_file", timeout=30)
        assert isinstance(csv, genq.Artifact)
        assert csv.content_type == "text/csv" and csv.name == "table.csv"
        assert csv.data == b"a,b\n1,2\n"

        # the stored result is JSON (a reference), never the raw bytes
        job = client.submit("as_image")
        job.result(timeout=30)
        stored = job.info().result
        assert stored["artifact"]["content_type"] == "image/png"
        assert stored["artifact"]["size"] == len(PNG)

        # yielded images stream as artifacts
        chunks = list(client.stream("images", n=3))
        assert all(isinstance(c, genq.Artifact) for c in chunks)
        assert [c.data for c in chunks] == [PNG + bytes([i]) for i in range(3)]
        assert [c.name for c in chunks] == ["step0.png", "step1.png", "step2.png"]
        assert {c.content_type for c in chunks} == {"image/png"}
        # and a generator of images has the list of artifacts as its result
        result = client.run("images", n=2, timeout=30)
        assert [a.data for a in result] == [PNG + b"\x00", PNG + b"\x01"]

        # a non-JSON value is a clear failure, not a crash of the worker
        with pytest.raises(genq.JobFailed, match="neither JSON-serializable nor binary"):
            client.run("not_json", timeout=30)
        assert client.run("typed", prompt="still", timeout=30) == "still/20/7.5"


@pytest.mark.anyio
async def test_binary_results_async_client(tmp_path: Path) -> None:
    app = make_app()
    async with app.local(tmp_path / "db.sqlite3") as client:
        image = await client.run("as_image", timeout=30)
        assert isinstance(image, genq.Artifact) and image.content_type == "image/png"
        chunks = [c async for c in client.stream("images", n=2)]
        assert [c.content_type for c in chunks] == ["image/png", "image/png"]
        assert chunks[1].data == PNG + b"\x01"
        mixed = await client.run("mixed", timeout=30)
        assert mixed["caption"] == "a fox"
        # a binary value nested in a dict result is decoded too
        assert isinstance(mixed["image"], genq.Artifact)
        assert mixed["image"].data == PNG and mixed["image"].name == "fox.png"
