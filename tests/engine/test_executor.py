"""``executor.execute`` on its own, one call of each kind with no store or worker around
it: where each kind runs, what reaches ``emit`` and in which order, what a generator's
result is, and that stopping a call stops the code behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from genq.executor import GeneratorOutcome, ThreadWatch, execute
from genq.functions import FunctionSpec, Options
from genq.progress import Progress

pytestmark = pytest.mark.anyio


def spec_of(fn: Any, **options: Any) -> FunctionSpec:
    return FunctionSpec(fn.__name__, fn, Options(**options))


class Emitted:
    """An ``emit`` that records each batch it is handed, and returns it as stored."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    async def __call__(self, batch: list[Any]) -> list[Any]:
        self.batches.append(list(batch))
        return batch

    @property
    def chunks(self) -> list[Any]:
        return [c for b in self.batches for c in b]


async def test_a_sync_function_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()

    def where(x: int) -> tuple[int, int]:
        return x * 2, threading.get_ident()

    value, ran_on = await execute(spec_of(where), {"x": 21}, progress=Progress(),
                                  emit=Emitted())
    assert value == 42 and ran_on != loop_thread


async def test_an_async_function_runs_on_the_loop() -> None:
    loop_thread = threading.get_ident()

    async def where() -> int:
        return threading.get_ident()

    assert await execute(spec_of(where), {}, progress=Progress(), emit=Emitted()) == loop_thread


async def test_progress_is_passed_to_the_parameter_that_asks_for_it() -> None:
    given = Progress()

    def report(progress: Progress = Progress()) -> bool:
        return progress is given

    assert await execute(spec_of(report), {}, progress=given, emit=Emitted()) is True


async def test_a_sync_generator_streams_in_order_from_its_own_thread() -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def tokens(n: int) -> Iterator[str]:
        for i in range(n):
            threads.add(threading.get_ident())
            yield f"t{i} "

    emit = Emitted()
    outcome = await execute(spec_of(tokens), {"n": 300}, progress=Progress(), emit=emit)
    assert isinstance(outcome, GeneratorOutcome)
    assert emit.chunks == [f"t{i} " for i in range(300)]
    assert outcome.result("j", 2) == "".join(f"t{i} " for i in range(300))  # text joins
    assert threads and loop_thread not in threads


async def test_a_generator_result_is_its_return_value_or_its_chunks() -> None:
    def counted() -> Iterator[int]:
        yield 1
        yield 2
        return 3  # the generator's return value is the job's result

    async def numbers() -> AsyncIterator[int]:
        yield 1
        yield 2

    returned = await execute(spec_of(counted), {}, progress=Progress(), emit=Emitted())
    assert returned.result("j", 2) == 3
    listed = await execute(spec_of(numbers), {}, progress=Progress(), emit=Emitted())
    assert listed.result("j", 2) == [1, 2]


async def test_stopping_a_sync_generator_runs_its_finally_in_its_thread() -> None:
    closed_on: list[int] = []
    produced: list[int] = []

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
                time.sleep(0.001)
        finally:
            closed_on.append(threading.get_ident())

    emit = Emitted()
    with anyio.move_on_after(0.2):
        await execute(spec_of(endless), {}, progress=Progress(), emit=emit)
    assert closed_on and closed_on[0] != threading.get_ident()
    count = len(produced)
    await anyio.sleep(0.05)
    assert len(produced) == count  # the producer really stopped
    assert emit.chunks == produced[: len(emit.chunks)]


async def test_an_async_generator_that_never_awaits_lets_the_loop_run() -> None:
    ticks: list[int] = []

    async def greedy() -> AsyncIterator[int]:
        for i in range(50):
            time.sleep(0.002)  # noqa: ASYNC251 - blocking, no await: the mistake genq guards against
            yield i

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await anyio.lowlevel.checkpoint()

    emit = Emitted()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await execute(spec_of(greedy), {}, progress=Progress(), emit=emit)
        tg.cancel_scope.cancel()
    assert emit.chunks == list(range(50))
    assert len(ticks) >= 25  # the loop had turns while it streamed, not only at the end


async def test_an_abandoned_sync_call_reports_when_its_thread_returns() -> None:
    release = threading.Event()
    watch = ThreadWatch()

    def stuck() -> None:
        release.wait(10)

    with anyio.move_on_after(0.1):
        await execute(spec_of(stuck), {}, progress=Progress(), emit=Emitted(), watch=watch)
    exited = threading.Event()
    assert watch.after_exit(exited.set)  # the call was abandoned, its thread runs on
    release.set()
    assert exited.wait(5)
    assert not watch.after_exit(exited.set)  # nothing runs any more
