"""Models as first-class, in one process: loaded once per replica before its jobs are
claimed, never on the event loop, retried (never failing queued jobs) when setup raises,
injected into every function that takes them, and torn down at shutdown.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
their ``Annotated[T, model]`` must name models that are local variables."""

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest

import genq
from genq.models import JobStatus
from genq.serving import host as host_module


class Weights:
    """A stand-in model: what a loader returns, with where it was loaded."""

    def __init__(self, device: str, key: str | None = None) -> None:
        self.device = device
        self.key = key
        self.thread = threading.current_thread().name


def shared_model_app(loads: list[Weights], teardowns: list[str]) -> genq.App:
    app = genq.App("shared")

    @app.model()
    def weights(device: str) -> Iterator[Weights]:
        time.sleep(0.3)  # a load that takes a while, so concurrent jobs would race it
        loaded = Weights(device)
        loads.append(loaded)
        yield loaded
        teardowns.append(f"weights on {device}")

    @app.function(concurrency=4)
    def describe(n: int, model: Annotated[Weights, weights]) -> str:
        return f"{n}:{id(model)}:{model.device}"

    @app.function(concurrency=4)
    async def describe_async(n: int, model: Annotated[Weights, weights]) -> str:
        await asyncio.sleep(0.01)
        return f"{n}:{id(model)}:{model.device}"

    return app


def test_one_load_per_process_serves_every_function_and_is_torn_down(tmp_path: Path) -> None:
    loads: list[Weights] = []
    teardowns: list[str] = []
    app = shared_model_app(loads, teardowns)
    with app.local(tmp_path / "jobs.sqlite3") as client:
        jobs = [client.submit("describe" if n % 2 else "describe_async", n=n)
                for n in range(24)]
        results = [job.result(timeout=30) for job in jobs]
        assert teardowns == []  # held while the engine runs
    assert len(loads) == 1, "the model must be loaded once, whatever the concurrency"
    assert loads[0].thread != threading.main_thread().name  # a def loader runs in a thread
    assert {r.split(":", 1)[1] for r in results} == {f"{id(loads[0])}:cpu"}
    assert [r.split(":")[0] for r in results] == [str(n) for n in range(24)]
    assert teardowns == ["weights on cpu"]


def test_jobs_wait_queued_until_the_model_is_loaded_and_the_loop_stays_free(
        tmp_path: Path) -> None:
    release = threading.Event()
    app = genq.App("slow")

    @app.model()
    def slow() -> str:
        if not release.wait(30):
            raise TimeoutError("the test never released the load")
        return "loaded"

    @app.function()
    def uses(model: Annotated[str, slow]) -> str:
        return model

    @app.function()
    async def free() -> str:
        return "no model needed"

    with app.local(tmp_path / "jobs.sqlite3") as client:
        waiting = client.submit("uses")
        # A function that needs no model runs while the other one's model loads; the
        # load is a blocking wait in a thread, so the loop answers meanwhile.
        assert client.submit("free").result(timeout=10) == "no model needed"
        time.sleep(0.3)
        assert waiting.info().status is JobStatus.QUEUED
        assert waiting.info().queue_position == 1
        release.set()
        assert waiting.result(timeout=10) == "loaded"


@pytest.fixture
def fast_setup_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "SETUP_RETRY_FIRST", 0.2)


@pytest.mark.anyio
async def test_a_failing_setup_is_reported_retried_and_fails_no_job(
        tmp_path: Path, fast_setup_retries: None) -> None:
    attempts: list[float] = []
    app = genq.App("flaky")

    @app.model()
    async def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise OSError("weights file is still being copied")
        return "finally"

    @app.function()
    def uses(model: Annotated[str, flaky]) -> str:
        return model

    async with app.local(tmp_path / "jobs.sqlite3") as client:
        job = await client.submit("uses")
        store = job_store(client)
        report = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            workers = await store.workers()
            if workers and workers[0].state_of("uses") == "failed":
                report = workers[0].states["uses"]
                break
            await asyncio.sleep(0.02)
        assert report is not None, "the failed setup was never reported"
        model_report = report["models"][0]
        assert model_report["error"] == "OSError: weights file is still being copied"
        assert model_report["retry_at"] is not None
        assert (await job.info()).status is JobStatus.QUEUED  # not failed for it
        assert await job.result(timeout=20) == "finally"
        workers = await store.workers()
        assert workers[0].state_of("uses") == "ready"
        assert workers[0].states["uses"]["models"][0]["attempts"] == 3
    assert len(attempts) == 3


def job_store(client: genq.AsyncClient) -> Any:
    """The store behind an ``app.local()`` client (for the worker's reports)."""
    transport = client.transport
    return transport.jobs.store  # type: ignore[attr-defined]


def test_keyed_models_are_an_lru_per_replica(tmp_path: Path) -> None:
    events: list[str] = []
    app = genq.App("lru")

    @app.model(key="checkpoint", max_models=2)
    def checkpoints(name: str) -> Iterator[Weights]:
        events.append(f"load {name}")
        yield Weights("cpu", name)
        events.append(f"unload {name}")

    @app.function()
    def generate(prompt: str, checkpoint: str,
                 pipe: Annotated[Weights, checkpoints]) -> str:
        return f"{prompt} with {pipe.key}"

    with app.local(tmp_path / "jobs.sqlite3") as client:
        for checkpoint in ["a", "b", "a", "c", "a", "b"]:
            job = client.submit("generate", prompt="p", checkpoint=checkpoint)
            assert job.result(timeout=10) == f"p with {checkpoint}"
    # a, b loaded; a used again (so b is least recent); c evicts b; a used again; b
    # evicts c; at shutdown the rest go, least recently used first.
    assert events == ["load a", "load b", "unload b", "load c", "unload c", "load b",
                      "unload a", "unload b"]


def test_a_keyed_load_is_in_the_jobs_log(tmp_path: Path) -> None:
    app = genq.App("logged")

    @app.model(key="checkpoint")
    def checkpoints(name: str) -> str:
        return name.upper()

    @app.function()
    def generate(checkpoint: str, pipe: Annotated[str, checkpoints]) -> str:
        return pipe

    with app.local(tmp_path / "jobs.sqlite3") as client:
        first = client.submit("generate", checkpoint="sd15")
        assert first.result(timeout=10) == "SD15"
        again = client.submit("generate", checkpoint="sd15")
        assert again.result(timeout=10) == "SD15"
        descriptions = [[e.data.get("description") for e in job.events()
                         if e.type == "progress"] for job in (first, again)]
    assert descriptions == [["loading model checkpoints[sd15]"], []]


def test_each_device_replica_loads_its_own_copy_and_takes_jobs(tmp_path: Path) -> None:
    loads: list[Weights] = []
    gate = threading.Barrier(2, timeout=10)
    app = genq.App("replicas")

    @app.model()
    def weights(device: str) -> Weights:
        loaded = Weights(device)
        loads.append(loaded)
        return loaded

    @app.function(concurrency=1)
    def work(n: int, model: Annotated[Weights, weights]) -> int:
        gate.wait()  # two jobs at once: only possible with one on each replica
        return id(model)

    with app.local(tmp_path / "jobs.sqlite3", devices=["cpu", "cpu"]) as client:
        jobs = [client.submit("work", n=n) for n in range(2)]
        used = {job.result(timeout=20) for job in jobs}
    assert len(loads) == 2
    assert used == {id(w) for w in loads}


def test_registration_errors_name_the_problem() -> None:
    app = genq.App("wrong")

    @app.model(key="checkpoint")
    def checkpoints(name: str) -> str:
        return name

    with pytest.raises(TypeError, match="'checkpoint', which generate has no parameter"):
        @app.function()
        def generate(prompt: str, pipe: Annotated[str, checkpoints]) -> str:
            return pipe

    other = genq.App("other")
    with pytest.raises(ValueError, match=r"not declared with this app's @app\.model"):
        @other.function()
        def borrowed(checkpoint: str, pipe: Annotated[str, checkpoints]) -> str:
            return pipe

    with pytest.raises(TypeError, match="batched function cannot take a keyed model"):
        @app.function(batch_size=4)
        def batched(checkpoint: list[str], pipe: Annotated[str, checkpoints]) -> list[str]:
            return checkpoint

    with pytest.raises(TypeError, match="only positional parameter"):
        @app.model(key="checkpoint")
        def no_key() -> str:
            return "x"

    with pytest.raises(ValueError, match="max_models is for a keyed model"):
        @app.model(max_models=3)
        def single() -> str:
            return "x"


def test_the_model_parameter_is_not_part_of_the_input_schema() -> None:
    app = shared_model_app([], [])
    schema = app.get_function("describe").input_schema()
    assert set(schema["properties"]) == {"n"}
    with pytest.raises(genq.InvalidInput, match="model"):
        app.get_function("describe").validate({"n": 1, "model": "x"})


def test_shutdown_during_a_load_does_not_wait_for_it_and_leaks_nothing(
        tmp_path: Path) -> None:
    release = threading.Event()
    torn_down = threading.Event()
    app = genq.App("abandoned")

    def free(model: str) -> None:
        torn_down.set()

    @app.model(unload=free)
    def endless() -> str:
        release.wait(30)
        return "loaded too late"

    @app.function()
    def uses(model: Annotated[str, endless]) -> str:
        return model

    started = time.monotonic()
    with app.local(tmp_path / "jobs.sqlite3", shutdown_grace=0.1) as client:
        job = client.submit("uses")
        time.sleep(0.2)
    assert time.monotonic() - started < 10  # the load was not waited for
    assert not torn_down.is_set()
    release.set()  # the load ends after shutdown: it tears down what it loaded
    assert torn_down.wait(10)
    with app.local(tmp_path / "jobs.sqlite3") as client:
        # The job was never claimed, so it is still queued for the next worker.
        release.set()
        assert client.result(job.id, timeout=10) == "loaded too late"


@pytest.mark.anyio
async def test_async_loaders_and_unload_hooks_run_in_order(tmp_path: Path) -> None:
    steps: list[str] = []
    app = genq.App("async")

    @app.model()
    async def tokenizer() -> Any:
        steps.append("open tokenizer")
        yield "tok"
        steps.append("close tokenizer")

    async def release(value: str) -> None:
        steps.append(f"unload {value}")

    @app.model(unload=release)
    async def encoder(device: str) -> str:
        await asyncio.sleep(0.05)  # loaded after the tokenizer
        steps.append("open encoder")
        return f"enc@{device}"

    @app.function()
    async def encode(text: str, tok: Annotated[str, tokenizer],
                     enc: Annotated[str, encoder]) -> str:
        return f"{tok}+{enc}:{text}"

    async with app.local(tmp_path / "jobs.sqlite3") as client:
        job = await client.submit("encode", text="hi")
        assert await job.result(timeout=10) == "tok+enc@cpu:hi"
    # Torn down in the reverse order of loading.
    assert steps == ["open tokenizer", "open encoder", "unload enc@cpu", "close tokenizer"]
