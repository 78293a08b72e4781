"""The Gradio adapter with the real gradio package, served on loopback, driven by
gradio_client (and, for a true connection reset, by raw httpx against Gradio's queue).

What is shown: partial outputs reach the Gradio client one by one as the genq job
produces them (growing text, several updates before the last); genq progress is
relayed into ``gr.Progress``; a reset Gradio connection leaves the job running and a
returning visitor (same cookie) picks it up with ``resume``; the explicit cancel hook
cancels it; and ``iterate_in_thread`` streams a blocking generator while Gradio's own
event loop stays free. Reloads, Stop and closed pages in a real browser:
test_gradio_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import genq
from genq.gradio import (
    SESSION_COOKIE,
    JobMemory,
    as_gradio,
    chat_interface,
    history_pairs,
    iterate_in_thread,
)
from tests.apps import retry_app
from tests.support.live_server import serve_app

# No network: no analytics, no Hub, no server-side rendering process.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_SSR_MODE", "False")

import gradio as gr
import gradio_client

# Gradio's own internals (pandas deprecations in its analytics summary, event loops and
# sockets it leaves to the garbage collector) warn; none of that is genq's doing.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore:.*:UserWarning:gradio"),
]

app = genq.App("gradio-test")


@app.function(concurrency=4)
def words(text: str, n: int = 6, delay: float = 0.15,
          progress: genq.Progress = genq.Progress()) -> Iterator[str]:
    """``n`` words, one every ``delay`` s, counted as progress."""
    for i in progress.tqdm(range(n), desc="writing", unit="words"):
        time.sleep(delay)
        yield f"{text}{i} "


@app.function(concurrency=4)
def chat(message: str, history: list[tuple[str, str]] = [],  # noqa: B006
         delay: float = 0.08) -> Iterator[str]:
    reply = f"you said {message} after {len(history)} turns: " + "la " * 8
    for word in reply.split():
        time.sleep(delay)
        yield word + " "


@app.function(concurrency=4, dedupe=True)
def shared_words(text: str, n: int = 8, delay: float = 0.15) -> Iterator[str]:
    """``words`` for identical submissions to share (dedupe)."""
    for i in range(n):
        time.sleep(delay)
        yield f"{text}{i} "


@pytest.fixture(autouse=True)
def _close_gradio_loops(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Gradio makes a fresh event loop (and sets it as this thread's) each time it builds
    an app outside a running loop, and never closes it; left to the garbage collector,
    those loops warn long after this module ran. Close them here."""
    created: list[asyncio.AbstractEventLoop] = []
    real = asyncio.new_event_loop
    # This thread's current-loop state, restored afterwards as it was.
    thread_state = getattr(asyncio.get_event_loop_policy(), "_local", None)
    saved = dict(vars(thread_state)) if thread_state is not None else {}

    def tracking() -> asyncio.AbstractEventLoop:
        loop = real()
        created.append(loop)
        return loop

    monkeypatch.setattr(asyncio, "new_event_loop", tracking)
    yield
    monkeypatch.undo()
    for loop in created:
        if not loop.is_running() and not loop.is_closed():
            loop.close()
    if thread_state is not None:
        vars(thread_state).clear()
        vars(thread_state).update(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()


@app.function
def swatch(colour: str, size: int = 8) -> genq.Image:
    """A small solid PNG."""
    from genq.demo.png import encode_rgb

    pixel = bytes.fromhex(colour)
    return genq.Image(encode_rgb(size, size, [pixel * size] * size), name="swatch.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def launched(demo: Any) -> Iterator[str]:
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True, share=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()
        with warnings.catch_warnings():  # collect what Gradio left behind, here
            warnings.simplefilter("ignore")
            gc.collect()


@contextlib.contextmanager
def gradio_client_for(url: str, cookie: str | None = None) -> Iterator[Any]:
    kwargs: dict[str, Any] = {}
    if cookie is not None:
        kwargs["httpx_kwargs"] = {"cookies": {SESSION_COOKIE: cookie}}
    client = gradio_client.Client(url, verbose=False, analytics_enabled=False,
                                  download_files=False, **kwargs)
    try:
        yield client
    finally:
        client.close()


def follow_gradio_job(job: Any) -> tuple[list[tuple[float, Any]], list[Any]]:
    """Every output with its arrival time (time.time()), and progress updates seen."""
    progress: list[Any] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            status = job.status()
            if status.progress_data:
                progress.extend(status.progress_data)
            time.sleep(0.003)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    outputs = []
    try:
        for output in job:
            outputs.append((time.time(), output))
    finally:
        done.set()
        poller.join(5)
    return outputs, progress


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[genq.Client]:
    with app.local(tmp_path_factory.mktemp("gradio") / "db.sqlite3") as client:
        yield client


def _growing(texts: list[str]) -> bool:
    return all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(texts))


def test_blocks_stream_partial_outputs_and_progress(local: genq.Client) -> None:
    memory = JobMemory()
    fn = as_gradio(local, "words", inputs=["text", "n"], memory=memory)
    with gr.Blocks() as demo:
        text, n, out = gr.Textbox(), gr.Number(precision=0), gr.Textbox()
        gr.Button().click(fn, [text, n], out, api_name="words")
    with launched(demo) as url, gradio_client_for(url, cookie="v1") as client:
        job = client.submit("w", 8, api_name="/words")
        outputs, progress = follow_gradio_job(job)
        entry = memory.get("cookie:v1", "words")
        assert entry is not None
        info = local.get(entry.job_id)
    texts = [o for _, o in outputs]
    assert texts[-1] == "".join(f"w{i} " for i in range(8)) == local.result(entry.job_id)
    assert len(texts) >= 4 and _growing(texts)  # several partial updates, growing
    assert info.finished_at is not None
    assert outputs[0][0] < info.finished_at  # the first reached Gradio's client mid-job
    assert any(p.desc == "writing" and p.unit == "words" and p.length == 8 for p in progress)


def test_chat_interface_over_http_with_async_client(tmp_path: Path) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def note_loop(value: Any) -> Any:
        if not loops:
            loops.append(asyncio.get_running_loop())
        return value

    with serve_app(app, tmp_path / "db.sqlite3") as genq_url:
        remote = genq.AsyncClient(genq_url)  # used only on Gradio's loop
        memory = JobMemory()
        demo = chat_interface(remote, "chat", memory=memory)
        fn = demo.genq_function  # type: ignore[attr-defined]
        # Same adapter, with a hook to learn Gradio's loop (to close the client on it).
        probe = as_gradio(remote, "chat", chat=True, transform=note_loop)
        with demo:
            gr.Button(visible=False).click(probe, [demo.textbox, demo.chatbot_state],
                                           demo.textbox, api_name="probe")
        with launched(demo) as url:
            try:
                with gradio_client_for(url, cookie="v2") as client:
                    outputs, _ = follow_gradio_job(client.submit("hello", api_name="/chat"))
                    client.predict("x", api_name="/probe")
                    # A reload of the chat page: the conversation comes back (with the
                    # textbox, which shows the stop button while the reply streams).
                    restored, _textbox = client.predict(api_name="/chat_resume")
            finally:
                if loops:
                    asyncio.run_coroutine_threadsafe(remote.aclose(), loops[0]).result(10)
    texts = [o for _, o in outputs]
    expected = "you said hello after 0 turns: " + "la " * 8
    assert texts[-1].split() == expected.split()
    assert len(texts) >= 4 and _growing(texts)
    assert memory.get("cookie:v2", "chat") is not None and fn.memory is memory
    assert [m["role"] for m in restored] == ["user", "assistant"]
    assert "hello" in json.dumps(restored[0]["content"])
    assert expected.strip() in json.dumps(restored[1]["content"])


def _queue_join(http: httpx.Client, fn_index: int, data: list[Any],
                session_hash: str) -> None:
    """What a browser does to run an event: join the queue, then read /queue/data."""
    response = http.post("/gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session_hash,
        "event_data": None, "trigger_id": None})
    response.raise_for_status()


def test_connection_reset_keeps_job_and_reload_resumes(local: genq.Client) -> None:
    memory = JobMemory()
    fn = as_gradio(local, "words", inputs=["text", "n", "delay"], memory=memory)
    with gr.Blocks() as demo:
        text, n, delay, out = gr.Textbox(), gr.Number(), gr.Number(), gr.Textbox()
        gr.Button().click(fn, [text, n, delay], out, api_name="words")
        demo.load(fn.resume, None, out, api_name="resume")
    with launched(demo) as url, gradio_client_for(url) as helper:
        fn_index = helper._infer_fn_index("/words", None)
        partial = 0
        with httpx.Client(base_url=url, cookies={SESSION_COOKIE: "v3"}, timeout=30) as http:
            _queue_join(http, fn_index, ["r", 24, 0.1], "tab1")
            with http.stream("GET", "/gradio_api/queue/data",
                             params={"session_hash": "tab1"}) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:") and \
                            json.loads(line[5:])["msg"] == "process_generating":
                        partial += 1
                        if partial == 3:
                            break  # the tab goes away: the connection is closed
        entry = memory.get("cookie:v3", "words")
        assert entry is not None
        assert local.get(entry.job_id).status is genq.JobStatus.RUNNING
        # A reload: a new page (new session) in the same browser (same cookie).
        with gradio_client_for(url, cookie="v3") as reloaded:
            outputs, _ = follow_gradio_job(reloaded.submit(api_name="/resume"))
        final = local.get(entry.job_id)
    expected = "".join(f"r{i} " for i in range(24))
    assert final.status is genq.JobStatus.SUCCEEDED  # never cancelled by the reset
    assert local.result(entry.job_id) == expected
    texts = [o for _, o in outputs]
    assert texts[-1] == expected and _growing(texts)


def test_stop_hook_cancels_the_job(local: genq.Client) -> None:
    memory = JobMemory()
    demo = chat_interface(local, "chat", inputs=["delay"], memory=memory,
                          additional_inputs=[gr.Number(value=0.3, label="delay")])
    demo.genq_function  # noqa: B018 - the adapter is reachable for custom wiring
    with launched(demo) as url, gradio_client_for(url, cookie="v4") as client:
        job = client.submit("stop me", 0.3, api_name="/chat")
        deadline = time.monotonic() + 30
        while not job.outputs() and time.monotonic() < deadline:
            time.sleep(0.02)
        entry = memory.get("cookie:v4", "chat")
        assert entry is not None
        client.predict(api_name="/chat_cancel")  # what the Stop button triggers
        with contextlib.suppress(Exception):
            job.result(30)
        final = local.get(entry.job_id)
        # A reload after Stop has nothing to resume: the cancelled job is forgotten.
        resumed = client.predict(api_name="/chat_resume")
    assert final.status is genq.JobStatus.CANCELLED
    assert memory.get("cookie:v4", "chat") is None
    # Nothing to resume: the chat and its textbox are left as they are (not emptied).
    assert resumed == ({"__type__": "update"}, {"__type__": "update"})


def test_stop_lets_go_of_a_shared_job_only_for_the_visitor_who_pressed_it(
        local: genq.Client) -> None:
    """Two visitors submit the same input to a dedupe function: one job serves both.
    One presses Stop: the job goes on and the other visitor gets the whole output."""
    memory = JobMemory()
    with gr.Blocks() as demo:
        fn = as_gradio(local, "shared_words", inputs=["text"], memory=memory)
        text, out = gr.Textbox(), gr.Textbox()
        # (no concurrency limit: Gradio's default of 1 would run the second call after
        # the first, when there is no live job left to share)
        gr.Button().click(fn, text, out, api_name="words", concurrency_limit=None)
        gr.Button().click(fn.cancel, None, None, api_name="stop")
    with launched(demo) as url, gradio_client_for(url, cookie="a") as alice, \
            gradio_client_for(url, cookie="b") as bob:
        alice_job = alice.submit("same", api_name="/words")
        bob_job = bob.submit("same", api_name="/words")
        deadline = time.monotonic() + 30
        while (memory.get("cookie:a", "shared_words") is None
               or memory.get("cookie:b", "shared_words") is None) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        a, b = memory.get("cookie:a", "shared_words"), memory.get("cookie:b", "shared_words")
        assert a is not None and b is not None
        assert a.job_id == b.job_id and a.ticket != b.ticket  # one job, two holders
        alice.predict(api_name="/stop")
        with contextlib.suppress(Exception):
            alice_job.result(30)
        outputs, _ = follow_gradio_job(bob_job)
        final = local.get(a.job_id)
    assert final.status is genq.JobStatus.SUCCEEDED
    assert outputs[-1][1] == "".join(f"same{i} " for i in range(8))


def test_accumulated_text_starts_over_with_a_new_run(tmp_path: Path) -> None:
    """A job retried after 39 tokens: the Textbox is cleared when the new run starts and
    ends with the new run's 100 tokens exactly, never the lost run's text before them."""
    lost, kept = "".join(retry_app.lost_chunks()), "".join(retry_app.kept_chunks())
    with retry_app.app.local(tmp_path / "db.sqlite3") as local:
        fn = as_gradio(local, "flaky_tokens", inputs=["tag", "delay"])
        with gr.Blocks() as demo:
            tag, delay, out = gr.Textbox(), gr.Number(), gr.Textbox()
            gr.Button().click(fn, [tag, delay], out, api_name="tokens")
        with launched(demo) as url, gradio_client_for(url) as client:
            outputs, _ = follow_gradio_job(client.submit("gradio", 0.01, api_name="/tokens"))
    texts = [o for _, o in outputs]
    assert texts[-1] == kept
    assert not [t for t in texts if t.startswith(lost) and len(t) > len(lost)]  # glued
    cleared = texts.index("")
    assert texts[:cleared] and all(lost.startswith(t) for t in texts[:cleared])
    assert all(kept.startswith(t) for t in texts[cleared:])


def test_binary_result_reaches_a_gradio_image(local: genq.Client) -> None:
    fn = as_gradio(local, "swatch", inputs=["colour"])
    with gr.Blocks() as demo:
        colour, image = gr.Textbox(), gr.Image(type="filepath")
        gr.Button().click(fn, colour, image, api_name="swatch")
    with launched(demo) as url, gradio_client_for(url) as client:
        result = client.predict("ff8000", api_name="/swatch")
        served = httpx.get(result["url"])  # Gradio serves the file genq stored
    assert result["orig_name"] == "swatch.png"
    assert served.status_code == 200 and served.content.startswith(b"\x89PNG")


def test_history_pairs_from_gradio_messages() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "fine"},
        {"role": "user", "content": "bye"},
    ]
    assert history_pairs(messages) == [["hi", "hello"], ["how are you?", "fine"],
                                       ["bye", ""]]
    assert history_pairs([["a", "b"], ("c", None)]) == [["a", "b"], ["c", ""]]


def _blocking_numbers(n: int, pause: float) -> Iterator[int]:
    for i in range(n):
        time.sleep(pause)  # holds its thread like a model step would
        yield i


async def _lag_probe(stop: anyio.Event, lags: list[float], interval: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(interval)
        lags.append(loop.time() - start - interval)


def test_iterate_in_thread_keeps_gradio_loop_free() -> None:
    pause, n = 0.2, 6
    lags: list[float] = []

    async def count(n: float) -> AsyncIterator[str]:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_lag_probe, stop, lags)
            text = ""
            async for i in iterate_in_thread(_blocking_numbers(int(n), pause)):
                text += f"{i} "
                yield text
            stop.set()

    with gr.Blocks() as demo:
        number, out = gr.Number(), gr.Textbox()
        gr.Button().click(count, number, out, api_name="count")
    with launched(demo) as url, gradio_client_for(url) as client:
        outputs, _ = follow_gradio_job(client.submit(n, api_name="/count"))
    texts = [o for _, o in outputs]
    assert texts[-1] == "".join(f"{i} " for i in range(n)) and len(texts) == n
    assert _growing(texts)
    # The loop never waited for a blocking step: its worst lag is far below one step...
    assert lags and max(lags) < pause / 2

    # ...whereas the same generator consumed on the loop blocks it for a whole step.
    naive: list[float] = []

    async def consume_on_loop() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_lag_probe, stop, naive)
            await asyncio.sleep(0)
            for _ in _blocking_numbers(3, pause):
                await asyncio.sleep(0)
            stop.set()

    anyio.run(consume_on_loop)
    assert max(naive) >= pause * 0.9
