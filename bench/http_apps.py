"""The servers the HTTP benchmarks load: genq's app, and the peers run beside it.

* ``app`` — the genq app, served with the real command:
  ``genq serve bench/http_apps.py:app --port P --db F --heartbeat S``.
* ``jobs_peer`` — a minimal Starlette app with the same endpoint pair as genq
  (``POST /api/jobs``, ``GET /api/jobs/{id}/result?wait=S``) doing the equivalent work
  in memory: no validation, no store, no durability. An upper bound for "a job over HTTP".
* ``stream_peer`` — a plain sse-starlette endpoint fed by an in-memory ``asyncio.Queue``
  per stream (no event log, no durability, no resume); for ``"function": "tokens"`` it runs
  bench_scale's ``token_stream``, the floor of that benchmark.
* ``gradio_stream_peer()`` — bench_scale's token generators in Gradio's queue.
* ``gradio_mistake_peer()`` — bench_blocking_async's blocking async generator in Gradio.
* ``gradio_peer()`` — a Gradio Blocks app with one API function in Gradio's queue, mounted
  on FastAPI: the one other job server with an HTTP API that runs here with no service
  (Celery/Flower, RQ, arq, SAQ, Dramatiq need Redis, RabbitMQ or Postgres).

Peers are served by ``python bench/_httpbench.py serve bench/http_apps.py:ATTR`` with the
same ``uvicorn.run`` settings ``genq serve`` uses (uvloop + httptools, one process).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import genq
from genq.openai_models import openai_models

# ``GENQ_BENCH_GC_THRESHOLD=50000,20,20``: the server process's cyclic-GC thresholds, for
# the benchmarks' "tuned GC" rows (``gc.set_threshold``; the default is 700,10,10).
if os.environ.get("GENQ_BENCH_GC_THRESHOLD"):
    gc.set_threshold(*map(int, os.environ["GENQ_BENCH_GC_THRESHOLD"].split(",")))


def _log_gc_pauses(path: str) -> None:
    """Append ``time.time() generation seconds`` for every collection over 5 ms to path."""
    out = open(path, "a", buffering=1)  # stays open for the life of the process
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (pause := time.perf_counter() - started[0]) > 0.005:
            out.write(f"{time.time():.3f} {info['generation']} {pause:.4f}\n")

    gc.callbacks.append(callback)


# ``GENQ_BENCH_GC_LOG=FILE``: log the server's GC pauses, which the benchmarks report.
if os.environ.get("GENQ_BENCH_GC_LOG"):
    _log_gc_pauses(os.environ["GENQ_BENCH_GC_LOG"])

# -- genq ------------------------------------------------------------------------------
app = genq.App("http-bench")


@app.function(concurrency=64)
async def noop() -> None:
    """bench_http_jobs: the no-op job."""
    return None


@app.function(concurrency=512)
async def ticks(n: int = 500, interval: float = 0.01, delay: float = 0.0
                ) -> AsyncIterator[str]:
    """bench_http_stream: after ``delay`` s, ``n`` chunks one every ``interval`` s (on a
    fixed schedule, so a late wake-up does not slow the rate), each the time.time() at
    which it was yielded."""
    start = time.monotonic() + delay
    await asyncio.sleep(delay)
    for i in range(n):
        yield f"{time.time():.6f}"
        await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))


# bench_openai_stream: the same generator as the OpenAI chat model "ticks", its input the
# last message's JSON, so /v1/chat/completions and the native stream run one function.
openai_models(app).chat("ticks", ticks,
                        to_input=lambda r: json.loads(r.messages[-1]["content"]))


@app.function(concurrency=512)
def ticks_sync(n: int = 500, interval: float = 0.01, delay: float = 0.0) -> Iterator[str]:
    """The same from a sync generator, which genq runs in a worker thread."""
    start = time.monotonic() + delay
    time.sleep(delay)
    for i in range(n):
        yield f"{time.time():.6f}"
        time.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))


async def token_stream(n: int = 200, interval: float = 0.01) -> AsyncIterator[str]:
    """bench_scale: tokens "0" .. "n-1", sleeping ``interval`` s after each, like a model
    that takes that long per token (a late wake-up delays the rest, as it would there).
    The same generator runs in genq, behind the sse-starlette floor and in Gradio."""
    for i in range(n):
        yield str(i)
        await asyncio.sleep(interval)


def token_stream_sync(n: int = 200, interval: float = 0.01) -> Iterator[str]:
    """The same as a sync generator (``time.sleep``), which genq runs in a worker thread."""
    for i in range(n):
        yield str(i)
        time.sleep(interval)


app.function(name="tokens", concurrency=512)(token_stream)
app.function(name="tokens_sync", concurrency=512)(token_stream_sync)


def _blocking_tokens(n: int, block: float) -> Iterator[str]:
    for i in range(n):
        time.sleep(block)  # a forward pass, holding whichever thread iterates this
        yield f"{i} "


async def mistake_stream(n: int = 15, block: float = 0.2) -> AsyncIterator[str]:
    """bench_blocking_async: the streaming-chat mistake, an ``async def`` generator that
    iterates a blocking sync generator on the event loop (``block`` s per token)."""
    for token in _blocking_tokens(n, block):
        yield token


app.function(name="mistake", concurrency=4)(mistake_stream)


@app.function(name="mistake_isolated", concurrency=4, isolate=True)
async def mistake_stream_isolated(n: int = 15, block: float = 0.2) -> AsyncIterator[str]:
    """``mistake_stream`` with isolate=True (a function of its own, so that the loop
    watchdog, which names functions by their code, tells the two apart)."""
    async for token in mistake_stream(n, block):
        yield token


@app.function(concurrency=1, max_queue=100_000)
async def hold(seconds: float = 60.0) -> None:
    """bench_sse_idle: one job holds the only slot, so the others stay queued."""
    await asyncio.sleep(seconds)


@app.function(concurrency=10_000, max_queue=100_000)
async def sleeper(seconds: float = 60.0) -> None:
    """bench_sse_idle --running: every job runs, silently, for ``seconds``."""
    await asyncio.sleep(seconds)


# -- the in-memory job peer ------------------------------------------------------------
def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status,
                    media_type="application/json")


_jobs: dict[str, asyncio.Future[Any]] = {}
_tasks: set[asyncio.Task[None]] = set()


async def _noop() -> None:
    return None


async def _run(future: asyncio.Future[Any]) -> None:
    future.set_result(await _noop())


async def _peer_submit(request: Request) -> Response:
    body = json.loads(await request.body())
    if body.get("function") != "noop":
        return _json({"error": {"code": "unknown_function"}}, 404)
    job_id = uuid.uuid4().hex
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    _jobs[job_id] = future
    task = asyncio.create_task(_run(future))
    _tasks.add(task)  # own the task, like a worker would
    task.add_done_callback(_tasks.discard)
    return _json({"id": job_id, "function": "noop", "status": "queued"}, 201)


async def _peer_result(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    future = _jobs.get(job_id)
    if future is None:
        return _json({"error": {"code": "job_not_found"}}, 404)
    wait = float(request.query_params.get("wait", "0"))
    if not future.done() and wait > 0:
        try:
            await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            pass
    if not future.done():
        return _json({"id": job_id, "status": "running"}, 202)
    del _jobs[job_id]  # nothing is kept: the peer's memory stays flat
    return _json({"id": job_id, "function": "noop", "status": "succeeded",
                  "result": future.result()})


async def _healthz(request: Request) -> Response:
    return _json({"status": "ok"})


jobs_peer = Starlette(routes=[
    Route("/healthz", _healthz),
    Route("/api/jobs", _peer_submit, methods=["POST"]),
    Route("/api/jobs/{job_id}/result", _peer_result),
])


# -- the in-memory SSE peer ------------------------------------------------------------
_streams: dict[str, asyncio.Queue[str | None]] = {}


async def _produce(queue: asyncio.Queue[str | None], n: int, interval: float,
                   delay: float) -> None:
    start = time.monotonic() + delay
    await asyncio.sleep(delay)
    for i in range(n):
        queue.put_nowait(f"{time.time():.6f}")
        await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
    queue.put_nowait(None)


async def _produce_tokens(queue: asyncio.Queue[str | None], n: int, interval: float
                          ) -> None:
    async for token in token_stream(n, interval):
        queue.put_nowait(token)
    queue.put_nowait(None)


async def _stream_start(request: Request) -> Response:
    body = json.loads(await request.body())
    inputs = body.get("input", {})
    stream_id = uuid.uuid4().hex
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _streams[stream_id] = queue
    if body.get("function") == "tokens":  # bench_scale: the same generator as genq's
        produce = _produce_tokens(queue, int(inputs.get("n", 200)),
                                  float(inputs.get("interval", 0.01)))
    else:
        produce = _produce(queue, int(inputs.get("n", 500)),
                           float(inputs.get("interval", 0.01)),
                           float(inputs.get("delay", 0.0)))
    task = asyncio.create_task(produce)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return _json({"id": stream_id, "status": "running"}, 201)


async def _stream_events(request: Request) -> Response:
    queue = _streams.pop(request.path_params["job_id"])

    async def events() -> AsyncIterator[ServerSentEvent]:
        seq = 0
        while (chunk := await queue.get()) is not None:
            seq += 1
            yield ServerSentEvent(json.dumps({"type": "output", "data": {"chunk": chunk}},
                                             separators=(",", ":")),
                                  id=str(seq), event="output")
        yield ServerSentEvent('{"type":"succeeded","data":{}}', id=str(seq + 1),
                              event="succeeded")

    return EventSourceResponse(events(), ping=15)


stream_peer = Starlette(routes=[
    Route("/healthz", _healthz),
    Route("/api/jobs", _stream_start, methods=["POST"]),
    Route("/api/jobs/{job_id}/events", _stream_events),
])


# -- Gradio ----------------------------------------------------------------------------
def gradio_peer() -> Any:
    """Gradio's queue behind its HTTP API: ``POST /gradio_api/call/noop`` answers an
    event id, ``GET /gradio_api/call/noop/{id}`` streams (SSE) until ``complete``."""
    import gradio as gr
    from fastapi import FastAPI

    async def gr_noop() -> None:
        return None

    with gr.Blocks(analytics_enabled=False) as demo:
        gr.api(gr_noop, api_name="noop", concurrency_limit=64)
    demo.queue(default_concurrency_limit=64, max_size=None)
    server = FastAPI()
    server.add_api_route("/healthz", _healthz)
    return gr.mount_gradio_app(server, demo, path="/ui", ssr_mode=False)


def gradio_mistake_peer() -> Any:
    """bench_blocking_async: ``mistake_stream`` in Gradio's queue as a Gradio user would
    register it (``api_name="mistake"``, Gradio's default concurrency limit of 1 per
    event) and with ``concurrency_limit=4`` (``"mistake4"``), mounted on FastAPI at /ui
    next to /healthz."""
    import gradio as gr
    from fastapi import FastAPI

    with gr.Blocks(analytics_enabled=False) as demo:
        gr.api(mistake_stream, api_name="mistake")
        gr.api(mistake_stream, api_name="mistake4", concurrency_limit=4)
    demo.queue(max_size=None)
    server = FastAPI()
    server.add_api_route("/healthz", _healthz)
    return gr.mount_gradio_app(server, demo, path="/ui", ssr_mode=False)


def gradio_stream_peer() -> Any:
    """bench_scale: ``token_stream`` (``api_name="tokens"``) and ``token_stream_sync``
    (``"tokens_sync"``) in Gradio's queue with no concurrency limit, mounted on FastAPI at
    /ui: followed with gradio_client or over ``/ui/gradio_api/call/<api_name>``."""
    import gradio as gr
    from fastapi import FastAPI

    with gr.Blocks(analytics_enabled=False) as demo:
        gr.api(token_stream, api_name="tokens", concurrency_limit=None)
        gr.api(token_stream_sync, api_name="tokens_sync", concurrency_limit=None)
    demo.queue(default_concurrency_limit=None, max_size=None)
    server = FastAPI()
    server.add_api_route("/healthz", _healthz)
    return gr.mount_gradio_app(server, demo, path="/ui", ssr_mode=False)

