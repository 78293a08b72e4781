"""Progress reporting (progress bars that keep moving) and cooperative cancellation of
sync code.

``genq.Progress`` turns fraction / description / tqdm-style updates into ``progress``
events with rate and ETA; a tight loop of a million updates costs a handful of events
yet its final state always lands; and once a job is cancelled the next Progress call
inside sync code raises ``genq.Cancelled`` so the code really stops.
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


class Flags:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.after_loop = threading.Event()
        self.stopped_by: list[str] = []
        self.stopped = threading.Event()
        self.iterations = 0


def make_app(flags: Flags) -> genq.App:
    app = genq.App()

    @app.function
    def described(progress: genq.Progress = genq.Progress()) -> str:
        progress(0.0, "loading model")
        time.sleep(0.15)
        progress(0.5, "denoising")
        time.sleep(0.15)
        progress(current=3, total=4, unit="images")
        time.sleep(0.15)
        progress.log("almost there")
        progress(1.0, "done")
        return "ok"

    @app.function
    def stepped(steps: int, progress: genq.Progress = genq.Progress()) -> int:
        total = 0
        for i in progress.tqdm(range(steps), desc="sampling", unit="it"):
            time.sleep(0.02)
            total += i
        return total

    @app.function
    def tight(n: int, progress: genq.Progress = genq.Progress()) -> int:
        for i in range(n):
            progress(current=i + 1, total=n)
        return n

    @app.function
    async def async_progress(progress: genq.Progress = genq.Progress()) -> str:
        for i in range(5):
            await asyncio.sleep(0.05)
            progress((i + 1) / 5, f"step {i + 1}")
        return "ok"

    @app.function
    def gen_progress(progress: genq.Progress = genq.Progress()) -> Iterator[str]:
        for i in progress.tqdm(range(4), desc="tokens"):
            time.sleep(0.05)
            yield str(i)

    @app.function
    async def agen_progress(progress: genq.Progress = genq.Progress()) -> AsyncIterator[str]:
        for i in range(4):
            await asyncio.sleep(0.05)
            progress((i + 1) / 4)
            yield str(i)

    @app.function
    def cancellable(progress: genq.Progress = genq.Progress()) -> str:
        flags.started.set()
        try:
            for _ in range(100_000):
                try:
                    progress(desc="working")
                except Exception:  # a user's broad except must not swallow cancellation
                    flags.stopped_by.append("Exception")
                flags.iterations += 1
                time.sleep(0.005)
            flags.after_loop.set()  # must never run once cancelled
            return "finished"
        except genq.Cancelled:
            flags.stopped_by.append("Cancelled")
            raise
        finally:
            flags.stopped.set()

    return app


def progress_events(events: list[genq.Event]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type is EventType.PROGRESS]


def test_fraction_description_counts_and_log(tmp_path: Path) -> None:
    with make_app(Flags()).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("described")
        events = list(job.events())
        assert job.result(timeout=30) == "ok"
    states = progress_events(events)
    descs = [s.get("description") for s in states]
    assert descs[0] == "loading model" and "denoising" in descs and descs[-1] == "done"
    assert states[0]["fraction"] == 0.0 and states[-1]["fraction"] == 1.0
    counted = [s for s in states if s.get("unit") == "images"]
    assert counted and counted[0]["current"] == 3 and counted[0]["total"] == 4
    assert counted[0]["fraction"] == 0.75
    logs = [e.data for e in events if e.type is EventType.LOG]
    assert logs == [{"message": "almost there", "level": "info"}]
    # the log keeps the order in which things happened
    order = [e.type for e in events]
    assert order.index(EventType.LOG) < max(i for i, t in enumerate(order)
                                            if t is EventType.PROGRESS)
    assert order[-1] is EventType.SUCCEEDED


def test_tqdm_reports_rate_and_eta(tmp_path: Path) -> None:
    with make_app(Flags()).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("stepped", steps=25)
        events = list(job.events())
        assert job.result(timeout=30) == sum(range(25))
    states = progress_events(events)
    assert len(states) >= 3  # a live bar, not only a start and an end
    assert all(s["total"] == 25 and s["unit"] == "it" and s["description"] == "sampling"
               for s in states)
    currents = [s["current"] for s in states]
    assert currents == sorted(currents) and currents[0] == 0 and currents[-1] == 25
    middle = [s for s in states if 0 < s["current"] < 25]
    assert middle, "no intermediate progress"
    assert all(s["rate"] > 0 and s["eta"] > 0 for s in middle)
    # the ETA shrinks as the work proceeds, and the bar ends full with nothing left
    assert middle[-1]["eta"] < middle[0]["eta"] or len(middle) == 1
    assert states[-1]["fraction"] == 1.0 and states[-1]["eta"] == 0


def test_a_million_progress_calls_make_a_handful_of_events(tmp_path: Path) -> None:
    with make_app(Flags()).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("tight", n=1_000_000)
        assert job.result(timeout=90) == 1_000_000
        events = list(job.events())
    states = progress_events(events)
    assert 1 <= len(states) < 100
    # the final state lands, even though it came in the middle of a burst
    assert states[-1]["fraction"] == 1.0 and states[-1]["current"] == 1_000_000
    assert events[-1].type is EventType.SUCCEEDED


@pytest.mark.anyio
@pytest.mark.parametrize("function", ["async_progress", "gen_progress", "agen_progress"])
async def test_progress_from_async_code_and_generators(tmp_path: Path, function: str) -> None:
    async with make_app(Flags()).local(tmp_path / "db.sqlite3") as client:
        job = await client.submit(function)
        events = [e async for e in job.events()]
        await job.result(timeout=30)
    states = progress_events(events)
    assert states and states[-1]["fraction"] == 1.0
    assert events[-1].type is EventType.SUCCEEDED


def test_progress_raises_cancelled_inside_sync_code(tmp_path: Path) -> None:
    flags = Flags()
    with make_app(flags).local(tmp_path / "db.sqlite3") as client:
        job = client.submit("cancellable")
        assert flags.started.wait(10)
        time.sleep(0.05)
        job.cancel()
        with pytest.raises(genq.JobCancelled):
            job.result(timeout=30)
        assert flags.stopped.wait(10)
        events = list(job.events())
        # the worker is free again for other work
        assert client.run("stepped", steps=2, timeout=30) == 1
    assert flags.stopped_by == ["Cancelled"]  # raised by Progress, not swallowed
    assert not flags.after_loop.is_set()  # code after the loop never ran
    assert flags.iterations < 100_000
    assert events[-1].type is EventType.CANCELLED
    assert [e.type for e in events].count(EventType.CANCELLED) == 1


def test_unbound_progress_is_ignored_when_called_directly() -> None:
    """The decorated function is still a plain function: its default Progress is inert."""
    flags = Flags()
    app = make_app(flags)
    fn = app.get_function("stepped").fn
    assert fn(steps=4) == 6
    assert app.get_function("tight").fn(n=1000) == 1000
    # and the Progress parameter is not part of the input schema
    schema = app.get_function("stepped").input_schema()
    assert set(schema["properties"]) == {"steps"}


def test_a_functions_own_progress_default_sets_its_coalescing(tmp_path: Path) -> None:
    app = genq.App()

    @app.function
    def every_step(progress: genq.Progress = genq.Progress(min_interval=0)) -> None:
        for i in range(5):
            progress((i + 1) / 5)
            time.sleep(0.05)

    with app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("every_step")
        job.result(timeout=10)
        fractions = [e.data["fraction"] for e in job.events()
                     if e.type is genq.EventType.PROGRESS]
    assert fractions == [0.2, 0.4, 0.6, 0.8, 1.0]
