"""The demo's chat with the REAL SmolLM2-135M-Instruct: streaming, cancellation, sharing.

The model loads once for this module (about 20 s on 2 cores); each chat is kept short.
Timing assertions compare timestamps recorded in this process (``time.monotonic``), never
absolute durations, so a slow or busy machine cannot make them flaky.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import torch  # noqa: F401 - scripts/setup.sh installs the llm extra; missing is a failure
import transformers  # noqa: F401

import genq
from genq.bridge import iterate_in_thread
from genq.demo import app, llm
from genq.models import EventType
from tests.support.live_server import serve_app

llm.model_folder()  # raises ModelUnavailable if set-up did not install the weights

PROMPT = "Name three colours."
# Greedy decoding of this prompt runs far past any cut-off used below.
LONG = "Write a long story about a lighthouse keeper and a storm."


class Loaded:
    def __init__(self, model: llm.ChatModel, results: list[tuple[Any, Any]]) -> None:
        self.model = model
        self.results = results


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    """The process-wide model, its first load raced by four threads at once."""
    model = llm.default_model()
    results: list[tuple[Any, Any]] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        barrier.wait()
        results.append(model.load())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 4, "a thread failed to load the model"
    return Loaded(model, results)


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


def test_model_loads_once_and_is_shared(loaded: Loaded, tmp_path: Path) -> None:
    model = loaded.model
    assert model.loads == 1
    assert len({id(tok) for tok, _ in loaded.results}) == 1
    assert len({id(m) for _, m in loaded.results}) == 1

    async def main() -> list[str]:
        texts: list[str] = ["", "", ""]
        async with app.local(tmp_path / "db.sqlite3") as client:
            async def one(i: int) -> None:
                texts[i] = await client.run("chat", message=PROMPT, max_new_tokens=21 + i,
                                            temperature=0)

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(one, i)
        return texts

    texts = anyio.run(main)
    assert all(t.strip() for t in texts)
    records = [_record(model, 21 + i) for i in range(3)]
    assert model.loads == 1  # three concurrent chats, still one load
    assert {r.model_id for r in records} == {id(loaded.results[0][1])}
    # They really ran side by side (concurrency=4), each in its own generate thread.
    assert max(r.started for r in records) < min(r.finished or 0 for r in records)
    assert len({id(r.thread) for r in records}) == 3


def test_tokens_stream_through_app_local(loaded: Loaded, tmp_path: Path) -> None:
    arrivals: list[tuple[float, str]] = []
    with app.local(tmp_path / "db.sqlite3") as client:
        for chunk in client.stream("chat", message="Tell me about the sea.",
                                   max_new_tokens=48, temperature=0):
            arrivals.append((time.monotonic(), chunk))
    record = _record(loaded.model, 48)
    text = "".join(c for _, c in arrivals)
    assert text.strip() and text == record.text
    assert len(arrivals) >= 5, "the reply came in one lump"
    # The first piece reached the client while the model was still producing the rest:
    # it arrived before the generator had even yielded its last piece.
    assert arrivals[0][0] < record.piece_times[-1]
    assert record.piece_times[0] < record.piece_times[-1]
    assert record.stopped is None and record.error is None


def test_cancel_mid_generation_stops_generate(loaded: Loaded, tmp_path: Path) -> None:
    max_tokens = 300
    with app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("chat", message=LONG, max_new_tokens=max_tokens,
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
    record = _record(loaded.model, max_tokens)
    _wait_finished(record)
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped == "cancelled"
    assert record.tokens < max_tokens  # generation stopped, not just the display
    assert EventType.PROGRESS in statuses  # tokens counted as progress


def test_closing_the_generator_stops_generate(loaded: Loaded) -> None:
    gen = llm.chat(LONG, max_new_tokens=299, temperature=0)
    pieces = [next(gen) for _ in range(3)]
    gen.close()  # GeneratorExit at the yield: the finally sets the flag and joins
    record = _record(loaded.model, 299)
    assert pieces and record.finished is not None
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped == "consumer stopped" and record.tokens < 299


def test_iterate_in_thread_break_stops_generate(loaded: Loaded) -> None:
    async def main() -> list[str]:
        got: list[str] = []
        async for piece in iterate_in_thread(llm.chat(LONG, max_new_tokens=298,
                                                      temperature=0)):
            got.append(piece)
            if len(got) == 3:
                break
        return got

    assert len(anyio.run(main)) == 3
    record = _record(loaded.model, 298)
    _wait_finished(record)
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped == "consumer stopped" and record.tokens < 298


def test_cli_streams_chat_over_http(loaded: Loaded, tmp_path: Path) -> None:
    with serve_app(app, tmp_path / "db.sqlite3") as url:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        with subprocess.Popen(
                [sys.executable, "-m", "genq.cli", "run", "chat", "--url", url,
                 "--message", "Say hello.", "--max-new-tokens", "40", "--temperature", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            reads: list[tuple[float, bytes]] = []
            while data := os.read(proc.stdout.fileno(), 4096):
                reads.append((time.monotonic(), data))
            stderr = proc.stderr.read().decode()
            code = proc.wait(60)
    assert code == 0, stderr
    record = _record(loaded.model, 40)
    text = b"".join(d for _, d in reads).decode()
    assert text.strip() == record.text.strip() and text.strip()
    # Printed as produced: the first text was on stdout before the model's last piece.
    assert len(reads) >= 2
    assert reads[0][0] < record.piece_times[-1]


# transformers' AsyncTextIteratorStreamer: an async def job awaits each piece.
async_app = genq.App("async-chat")


@async_app.function()
async def achat(message: str, max_new_tokens: int = 64, temperature: float = 0.0,
                progress: genq.Progress = genq.Progress()) -> AsyncIterator[str]:
    async for piece in llm.achat(message, max_new_tokens=max_new_tokens,
                                 temperature=temperature, progress=progress):
        yield piece


def test_async_streamer_streams_without_blocking_the_loop(loaded: Loaded,
                                                           tmp_path: Path) -> None:
    arrivals: list[tuple[float, str]] = []
    with async_app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("achat", message="Tell me about the sea.", max_new_tokens=47)
        for event in job.events():
            if event.type is EventType.OUTPUT:
                arrivals.append((time.monotonic(), event.data["chunk"]))
        log = list(job.events())
    record = _record(loaded.model, 47)
    assert "".join(c for _, c in arrivals) == record.text and record.text.strip()
    assert len(arrivals) >= 5 and arrivals[0][0] < record.piece_times[-1]
    # It awaited every piece: genq found nothing to warn about.
    assert not [e for e in log if e.type is EventType.LOG and e.data["level"] == "warning"]
    assert log[-1].type is EventType.SUCCEEDED


def test_async_streamer_cancel_stops_generate(loaded: Loaded, tmp_path: Path) -> None:
    with async_app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("achat", message=LONG, max_new_tokens=297)
        outputs = 0
        for event in job.events():
            if event.type is EventType.OUTPUT:
                outputs += 1
                if outputs == 3:
                    job.cancel()
        assert event.type is EventType.CANCELLED
    record = _record(loaded.model, 297)
    _wait_finished(record)
    assert record.thread is not None and not record.thread.is_alive()
    assert record.stopped in ("cancelled", "consumer stopped") and record.tokens < 297
