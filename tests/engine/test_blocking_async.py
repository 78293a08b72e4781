"""Async functions that block the loop: ``isolate=True`` runs them on a loop of their
own, and without it an async generator whose steps block takes turns with the rest of
the loop (genq.loopshare) instead of stepping back to back with its peers."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

import genq

pytestmark = pytest.mark.anyio


async def until(check: Callable[[], bool], what: str = "the condition") -> None:
    for _ in range(1000):
        if check():
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"{what} did not happen within 10 s")


async def test_an_isolated_generator_streams_from_a_loop_of_its_own(tmp_path: Path) -> None:
    app = genq.App()
    seen: list[tuple[int, asyncio.AbstractEventLoop]] = []
    closed: list[bool] = []

    @app.function(isolate=True)
    async def chat(n: int) -> AsyncIterator[str]:
        try:
            for i in range(n):
                seen.append((threading.get_ident(), asyncio.get_running_loop()))
                time.sleep(0.001)  # noqa: ASYNC251 - blocking code in async def, on purpose
                yield f"t{i} "
                await asyncio.sleep(0)  # its own awaits still work on its own loop
        finally:
            closed.append(True)

    async with app.local(tmp_path / "db.sqlite3") as client:
        main_loop = asyncio.get_running_loop()
        text = "".join([c async for c in client.stream("chat", n=50)])
        assert text == "".join(f"t{i} " for i in range(50))
        assert {loop for _, loop in seen} != {main_loop} and len({lp for _, lp in seen}) == 1
        assert threading.get_ident() not in {t for t, _ in seen}
        assert closed == [True]

        # A consumer that leaves early stops it: its finally runs on its own loop.
        closed.clear()
        async for _ in client.stream("chat", n=100_000):
            break
        await until(lambda: bool(closed))


async def test_an_isolated_coroutine_returns_and_is_cancelled_on_its_loop(
        tmp_path: Path) -> None:
    app = genq.App()
    cancelled = threading.Event()

    @app.function(isolate=True)
    async def work(x: int) -> int:
        await asyncio.sleep(0)
        time.sleep(0.01)  # noqa: ASYNC251 - blocking code in async def, on purpose
        return x * 2

    @app.function(isolate=True)
    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with app.local(tmp_path / "db.sqlite3") as client:
        assert await client.run("work", x=21) == 42
        job = await client.submit("forever")
        for _ in range(1000):
            if (await job.info()).status is genq.JobStatus.RUNNING:
                break
            await anyio.sleep(0.01)
        await job.cancel()
        with pytest.raises(genq.JobCancelled):
            await job.result(timeout=10)
        assert await anyio.to_thread.run_sync(cancelled.wait, 10)


def test_isolate_is_for_async_functions_only() -> None:
    app = genq.App()
    with pytest.raises(TypeError, match="isolate=True is for async def"):
        @app.function(isolate=True)
        def plain() -> None: ...


async def test_blocking_async_generators_take_turns_with_the_loop(tmp_path: Path) -> None:
    """Two async generators whose every step blocks, and a task that notes each loop turn
    it gets: once a generator is known to block, no two blocking steps run back to back
    without the loop serving others in between."""
    app = genq.App()
    timeline: list[str] = []

    @app.function(concurrency=2)
    async def mistake(name: str, n: int) -> AsyncIterator[str]:
        for i in range(n):
            timeline.append(name)
            time.sleep(0.03)  # noqa: ASYNC251 - the mistake itself: blocking, no await
            yield f"{name}{i}"

    async def ticker() -> None:
        while True:
            timeline.append(".")
            await asyncio.sleep(0)

    async with app.local(tmp_path / "db.sqlite3") as client:
        async def stream(name: str) -> list[str]:
            return [c async for c in client.stream("mistake", name=name, n=12)]

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            results: dict[str, list[str]] = {}

            async def run(name: str) -> None:
                results[name] = await stream(name)

            async with anyio.create_task_group() as streams:
                streams.start_soon(run, "a")
                streams.start_soon(run, "b")
            tg.cancel_scope.cancel()

    assert results == {name: [f"{name}{i}" for i in range(12)] for name in "ab"}
    steps = [k for k, _ in itertools.groupby(timeline)]  # runs of ticks fold into one
    # Each generator's first step is not yet known to block; after both have made one,
    # every blocking step is followed by the loop serving the ticker.
    later = steps[steps.index("b") + 1:] if steps.index("b") > steps.index("a") else \
        steps[steps.index("a") + 1:]
    back_to_back = [pair for pair in itertools.pairwise(later) if "." not in pair]
    assert back_to_back == [], later
