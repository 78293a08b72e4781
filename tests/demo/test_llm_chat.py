"""The demo's chat with the REAL SmolLM2-135M-Instruct: streaming, cancellation, sharing.

The demo app declares the model with ``@app.model`` (``smollm2``), so one worker loads it
when it starts, before it claims a chat. This module runs ONE such worker for all its
tests (``demo``: the demo app with only ``chat``, in ``app.local``) and loads the model
that one time (20-45 s on 2 busy cores, hence the module's longer timeout): the tests
that call ``ChatModel.chat`` directly and ``shared_app`` (async chats, and an HTTP server
for the CLI) all use that worker's loaded model, which ``spy_loads`` hands over while
the real loader runs.

Timing assertions compare timestamps recorded in this process (``time.monotonic``), never
absolute durations, so a slow or busy machine cannot make them flaky.

No ``from __future__ import annotations``: ``shared_app`` is built in a fixture, and its
``Annotated[ChatModel, shared]`` names a model that is a local variable.
"""

import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
import pytest
import torch  # noqa: F401 - scripts/setup.sh installs the llm extra; missing is a failure
import transformers  # noqa: F401

import genq
from genq.bridge import iterate_in_thread
from genq.demo import app, llm, smollm2
from genq.models import EventType, JobStatus
from tests.support.live_server import serve_app
from tests.support.model_spy import Loads, spy_loads

llm.model_folder()  # raises ModelUnavailable if set-up did not install the weights

pytestmark = pytest.mark.timeout(300)  # the first test waits for the real model's load

PROMPT = "Name three colours."
# Greedy decoding of this prompt runs far past any cut-off used below.
LONG = "Write a long story about a lighthouse keeper and a storm."


@dataclass
class Demo:
    client: genq.Client
    db: Path
    loads: Loads
    first_job: genq.Job  # submitted before the model was loaded
    status_while_loading: JobStatus

    @property
    def model(self) -> llm.ChatModel:
        return self.loads.instances[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo app's worker (chat only), its model load held back until a chat job is
    queued, so the tests can see the job wait for the model rather than run without it."""
    db = tmp_path_factory.mktemp("chat") / "db.sqlite3"
    gate = threading.Event()
    with spy_loads(smollm2, gate=gate) as loads, \
            app.local(db, functions=["chat"]) as client:
        first = client.submit("chat", message=PROMPT, max_new_tokens=20, temperature=0)
        time.sleep(0.3)  # time enough for a worker that did not wait to claim it
        status = first.info().status
        gate.set()
        loads.wait(timeout=280)
        yield Demo(client, db, loads, first, status)
    assert loads.teardowns == 1  # shutdown closed the model
    assert loads.instances[0].closed


def _record(model: llm.ChatModel, max_new_tokens: int) -> llm.Generation:
    """The latest generation asked for ``max_new_tokens`` (tests use distinct values)."""
    for record in reversed(model.recent):
        if record.max_new_tokens == max_new_tokens:
            return record
    raise AssertionError(f"no generation with max_new_tokens={max_new_tokens}")


def _wait_finished(record: llm.Generation, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while record.finished is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert record.finished is not None, "chat() did not return"


def test_the_model_loads_before_chats_run_once_and_is_shared(demo: Demo) -> None:
    # The chat submitted while the model was held back waited in the queue: no worker
    # ran it without its model (no "running" bubble that says nothing).
    assert demo.status_while_loading is JobStatus.QUEUED
    assert demo.first_job.result(timeout=60).strip()
    model = demo.model
    jobs = [demo.client.submit("chat", message=PROMPT, max_new_tokens=21 + i,
                               temperature=0) for i in range(3)]
    texts = [job.result(timeout=120) for job in jobs]
    assert all(t.strip() for t in texts)
    records = [_record(model, 21 + i) for i in range(3)]
    assert len(demo.loads.instances) == 1  # four chats, one load
    assert {r.model_id for r in records} == {id(model.model)}
    # They really ran side by side (concurrency=4), each in its own generate thread.
    assert max(r.started for r in records) < min(r.finished or 0 for r in records)
    assert len({id(r.thread) for r in records}) == 3


def test_tokens_stream_through_app_local(demo: Demo) -> None:
    arrivals: list[tuple[float, str]] = []
    for chunk in demo.client.stream("chat", message="Tell me about the sea.",
                                    max_new_tokens=48, temperature=0):
        arrivals.append((time.monotonic(), chunk))
    record = _record(demo.model, 48)
    text = "".join(c for _, c in arrivals)
    assert text.strip() and text == record.text
    assert len(arrivals) >= 5, "the reply came in one lump"
    # The first piece reached the client while the model was still producing the rest:
    # it arrived before the generator had even yielded its last piece.
    assert arrivals[0][0] < record.piece_times[-1]
    assert record.piece_times[0] < record.piece_times[-1]
    assert record.stopped is None and record.error is None


def test_cancel_mid_generation_stops_generate(demo: Demo) -> None:
    max_tokens = 300
    job = demo.client.submit("chat", message=LONG, max_new_tokens=max_tokens,
                             temperature=0)
    outputs = 0
    statuses: list[EventType] = []
    for event in job.events():
        statuses.append(event.type)
        if event.type is EventType.OUTPUT:
            outputs += 1
            if outputs == 4:
                job.cancel()
    assert statuses[-1] is EventType.CANCELLED
    record = _record(demo.model, max_tokens)
    _wait_finished(record)
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped == "cancelled"
    assert record.tokens < max_tokens  # generation stopped, not just the display
    assert EventType.PROGRESS in statuses  # tokens counted as progress


def test_closing_the_generator_stops_generate(demo: Demo) -> None:
    gen = demo.model.chat(LONG, max_new_tokens=299, temperature=0)
    pieces = [next(gen) for _ in range(3)]
    gen.close()  # GeneratorExit at the yield: the finally sets the flag and joins
    record = _record(demo.model, 299)
    assert pieces and record.finished is not None
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped == "consumer stopped" and record.tokens < 299


def test_iterate_in_thread_break_stops_generate(demo: Demo) -> None:
    async def main() -> list[str]:
        got: list[str] = []
        async for piece in iterate_in_thread(demo.model.chat(LONG, max_new_tokens=298,
                                                             temperature=0)):
            got.append(piece)
            if len(got) == 3:
                break
        return got

    assert len(anyio.run(main)) == 3
    record = _record(demo.model, 298)
    _wait_finished(record)
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped == "consumer stopped" and record.tokens < 298


@pytest.fixture(scope="module")
def shared_app(demo: Demo) -> genq.App:
    """An app on the module's loaded model (a loader may return an instance someone else
    owns: then it has no teardown of its own), for the tests that need an app of their
    own: an HTTP server (one process owns a SQLite store), and async chats. ``chat`` is
    the demo's; ``achat`` reads transformers' AsyncTextIteratorStreamer: an async def job
    awaits each piece."""
    chat_app = genq.App("shared-chat")

    @chat_app.model()
    def shared() -> llm.ChatModel:
        return demo.model

    @chat_app.function(concurrency=4)
    def chat(message: str, model: Annotated[llm.ChatModel, shared],
             max_new_tokens: int = 64, temperature: float = 0.0,
             progress: genq.Progress = genq.Progress()) -> Iterator[str]:
        yield from model.chat(message, max_new_tokens=max_new_tokens,
                              temperature=temperature, progress=progress)

    @chat_app.function()
    async def achat(message: str, model: Annotated[llm.ChatModel, shared],
                    max_new_tokens: int = 64, temperature: float = 0.0,
                    progress: genq.Progress = genq.Progress()) -> AsyncIterator[str]:
        async for piece in model.achat(message, max_new_tokens=max_new_tokens,
                                       temperature=temperature, progress=progress):
            yield piece

    return chat_app


def test_async_streamer_streams_without_blocking_the_loop(demo: Demo, shared_app: genq.App,
                                                           tmp_path: Path) -> None:
    arrivals: list[tuple[float, str]] = []
    with shared_app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("achat", message="Tell me about the sea.", max_new_tokens=47)
        for event in job.events():
            if event.type is EventType.OUTPUT:
                arrivals.append((time.monotonic(), event.data["chunk"]))
        log = list(job.events())
    record = _record(demo.model, 47)
    assert "".join(c for _, c in arrivals) == record.text and record.text.strip()
    assert len(arrivals) >= 5 and arrivals[0][0] < record.piece_times[-1]
    # It awaited every piece: genq found nothing to warn about.
    assert not [e for e in log if e.type is EventType.LOG and e.data["level"] == "warning"]
    assert log[-1].type is EventType.SUCCEEDED
    assert not demo.model.closed  # the async app's shutdown left the shared model alone


def test_async_streamer_cancel_stops_generate(demo: Demo, shared_app: genq.App,
                                              tmp_path: Path) -> None:
    with shared_app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("achat", message=LONG, max_new_tokens=297)
        outputs = 0
        for event in job.events():
            if event.type is EventType.OUTPUT:
                outputs += 1
                if outputs == 3:
                    job.cancel()
        assert event.type is EventType.CANCELLED
    record = _record(demo.model, 297)
    _wait_finished(record)
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped in ("cancelled", "consumer stopped") and record.tokens < 297


def test_cli_streams_chat_over_http(demo: Demo, shared_app: genq.App,
                                    tmp_path: Path) -> None:
    with serve_app(shared_app, tmp_path / "db.sqlite3") as url:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        with subprocess.Popen(
                [sys.executable, "-m", "genq.cli", "run", "--server", url, "chat",
                 "--message", "Say hello.", "--max-new-tokens", "40", "--temperature", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            reads: list[tuple[float, bytes]] = []
            while data := os.read(proc.stdout.fileno(), 4096):
                reads.append((time.monotonic(), data))
            stderr = proc.stderr.read().decode()
            code = proc.wait(60)
    assert code == 0, stderr
    record = _record(demo.model, 40)
    text = b"".join(d for _, d in reads).decode()
    assert text.strip() == record.text.strip() and text.strip()
    # Printed as produced: the first text was on stdout before the model's last piece.
    assert len(reads) >= 2
    assert reads[0][0] < record.piece_times[-1]
