"""Work never repeated: result caching, in-flight de-duplication and
idempotency keys. The same prompt is generated once; a retried submission (a double
click, a client retry after a network blip) gets the same job back.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

import genq
from genq import EventType, JobStatus


class Calls:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_prompt: dict[str, int] = {}
        self.release = threading.Event()
        self.started = threading.Event()

    def count(self, prompt: str) -> int:
        with self.lock:
            self.by_prompt[prompt] = self.by_prompt.get(prompt, 0) + 1
            return self.by_prompt[prompt]

    def total(self) -> int:
        return sum(self.by_prompt.values())


def make_app(calls: Calls) -> genq.App:
    app = genq.App()

    @app.function(concurrency=4, cache=True)
    def render(prompt: str, steps: int = 20) -> dict[str, Any]:
        n = calls.count(prompt)
        return {"image": f"{prompt}@{steps}", "run": n}

    @app.function(concurrency=4, cache=0.4)
    def short_lived(prompt: str) -> int:
        return calls.count(prompt)

    @app.function(concurrency=4, cache=True)
    def slow(prompt: str) -> str:
        calls.count(prompt)
        calls.started.set()
        calls.release.wait(30)
        return prompt.upper()

    @app.function(concurrency=4, dedupe=True)
    def deduped(prompt: str) -> int:
        n = calls.count(prompt)
        calls.started.set()
        calls.release.wait(30)
        return n

    @app.function(concurrency=4)
    def charge(account: str, amount: int) -> str:
        calls.count(account)
        return f"charged {account} {amount}"

    @app.function(concurrency=4)
    def other(account: str, amount: int) -> str:
        return "other"

    return app


# -- caching -------------------------------------------------------------------------------
def test_cache_returns_the_result_without_running_again(tmp_path: Path) -> None:
    calls = Calls()
    db = tmp_path / "db.sqlite3"
    with make_app(calls).local(db) as client:
        first = client.submit("render", prompt="a red fox", steps=30)
        assert first.result(timeout=30) == {"image": "a red fox@30", "run": 1}
        # the same input again, even spelled differently (defaults, key order, "30")
        again = client.submit("render", {"steps": "30", "prompt": "a red fox"})
        assert again.reason == "cached"
        assert again.id != first.id
        assert again.result(timeout=5) == {"image": "a red fox@30", "run": 1}
        events = list(again.events())
        assert [e.type for e in events] == [EventType.SUCCEEDED]
        assert events[0].data["cached_from"] == first.id
        # a different input runs
        assert client.run("render", prompt="a red fox", steps=10, timeout=30)["run"] == 2
        assert client.run("render", prompt="a blue fox", timeout=30)["run"] == 1
    assert calls.by_prompt == {"a red fox": 2, "a blue fox": 1}

    # the cache is in the database: it survives a restart
    with make_app(calls).local(db) as client:
        cached = client.submit("render", prompt="a red fox", steps=30)
        assert cached.reason == "cached"
        assert cached.result(timeout=5)["run"] == 1
    assert calls.total() == 3


def test_cache_with_a_lifetime_runs_again_once_it_lapses(tmp_path: Path) -> None:
    calls = Calls()
    with make_app(calls).local(tmp_path / "db.sqlite3") as client:
        assert client.run("short_lived", prompt="p", timeout=30) == 1
        assert client.run("short_lived", prompt="p", timeout=30) == 1  # cached
        time.sleep(0.8)  # twice the cache lifetime of 0.4 s
        assert client.run("short_lived", prompt="p", timeout=30) == 2


def test_failed_jobs_are_not_cached(tmp_path: Path) -> None:
    app = genq.App()
    attempts: list[int] = []

    @app.function(cache=True)
    def sometimes(prompt: str) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("out of memory")
        return "ok"

    with app.local(tmp_path / "db.sqlite3") as client:
        with pytest.raises(genq.JobFailed):
            client.run("sometimes", prompt="x", timeout=30)
        assert client.run("sometimes", prompt="x", timeout=30) == "ok"
        assert client.run("sometimes", prompt="x", timeout=30) == "ok"
    assert len(attempts) == 2


# -- in-flight de-duplication ------------------------------------------------------------------
def test_identical_submissions_while_running_share_one_job(tmp_path: Path) -> None:
    calls = Calls()
    with make_app(calls).local(tmp_path / "db.sqlite3") as client:
        first = client.submit("slow", prompt="castle")
        assert calls.started.wait(10)
        twins = [client.submit("slow", prompt="castle") for _ in range(5)]
        assert {t.id for t in twins} == {first.id}
        assert {t.reason for t in twins} == {"deduplicated"}
        other = client.submit("slow", prompt="moat")
        assert other.id != first.id
        calls.release.set()
        assert [t.result(timeout=30) for t in twins] == ["CASTLE"] * 5
        assert other.result(timeout=30) == "MOAT"
    assert calls.by_prompt == {"castle": 1, "moat": 1}


def test_identical_submissions_from_many_threads_share_one_job(tmp_path: Path) -> None:
    calls = Calls()
    barrier = threading.Barrier(12)
    with make_app(calls).local(tmp_path / "db.sqlite3") as client:
        def submit(_: int) -> str:
            barrier.wait(10)
            return client.submit("slow", prompt="same").id

        with ThreadPoolExecutor(12) as pool:
            ids = list(pool.map(submit, range(12)))
        assert len(set(ids)) == 1
        calls.release.set()
        assert client.result(ids[0], timeout=30) == "SAME"
    assert calls.by_prompt == {"same": 1}


@pytest.mark.anyio
async def test_dedupe_without_cache_joins_only_live_jobs(tmp_path: Path) -> None:
    calls = Calls()
    async with make_app(calls).local(tmp_path / "db.sqlite3") as client:
        first = await client.submit("deduped", prompt="x")
        second = await client.submit("deduped", prompt="x")
        assert second.id == first.id and second.reason == "deduplicated"
        calls.release.set()
        assert await first.result(timeout=30) == 1
        # finished, and not cached: a new submission runs again
        third = await client.submit("deduped", prompt="x")
        assert third.id != first.id and third.reason == "new"
        assert await third.result(timeout=30) == 2


# -- idempotency keys --------------------------------------------------------------------------
def test_idempotency_key_returns_the_same_job(tmp_path: Path) -> None:
    calls = Calls()
    db = tmp_path / "db.sqlite3"
    with make_app(calls).local(db) as client:
        job = client.submit("charge", account="acme", amount=10, idempotency_key="order-1")
        assert job.reason == "new"
        retry = client.submit("charge", account="acme", amount=10, idempotency_key="order-1")
        assert retry.id == job.id and retry.reason == "idempotent"
        assert job.result(timeout=30) == "charged acme 10"
        # after it finished, the key still answers with the same (finished) job
        late = client.submit("charge", {"amount": 10, "account": "acme"},
                             idempotency_key="order-1")
        assert late.id == job.id and late.info().status is JobStatus.SUCCEEDED
        assert late.result(timeout=5) == "charged acme 10"

        # the key reused for something else is refused, naming the key
        with pytest.raises(genq.IdempotencyConflict, match="order-1") as conflict:
            client.submit("charge", account="acme", amount=99, idempotency_key="order-1")
        assert conflict.value.detail["job_id"] == job.id
        with pytest.raises(genq.IdempotencyConflict):
            client.submit("other", account="acme", amount=10, idempotency_key="order-1")

        # without a key, or with another key, it is a new job
        assert client.submit("charge", account="acme", amount=10).id != job.id
        fresh = client.submit("charge", account="acme", amount=10, idempotency_key="order-2")
        assert fresh.id != job.id
        fresh.result(timeout=30)
    assert calls.by_prompt == {"acme": 3}

    # keys are durable: a restart still recognises them
    with make_app(calls).local(db) as client:
        again = client.submit("charge", account="acme", amount=10, idempotency_key="order-1")
        assert again.id == job.id
        with pytest.raises(genq.IdempotencyConflict):
            client.submit("charge", account="acme", amount=1, idempotency_key="order-1")
    assert calls.by_prompt == {"acme": 3}


@pytest.mark.anyio
async def test_idempotency_key_from_concurrent_submissions(tmp_path: Path) -> None:
    """A double click: two submissions with one key racing each other make one job."""
    calls = Calls()
    async with make_app(calls).local(tmp_path / "db.sqlite3") as client:
        ids: list[str] = []

        async def submit() -> None:
            job = await client.submit("charge", account="acme", amount=5,
                                      idempotency_key="click")
            ids.append(job.id)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(submit)
        assert len(set(ids)) == 1
        assert await client.result(ids[0], timeout=30) == "charged acme 5"
    assert calls.by_prompt == {"acme": 1}
