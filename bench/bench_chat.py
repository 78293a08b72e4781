"""Chat streaming through the whole stack vs calling the model directly, same run.

The demo's ``chat`` (SmolLM2-135M-Instruct on the CPU, greedy, a fixed number of new
tokens) is run four ways, each with 1 and with 4 chats at once:

* ``direct``: ``ChatModel.chat`` of a loaded ``genq.demo.llm.ChatModel`` iterated in plain
  threads (what any app would do);
* ``local``: ``app.local()``'s async client, ``client.stream("chat", ...)``;
* ``http``: a real uvicorn server on loopback, ``genq.AsyncClient(url).stream(...)``.

Figures per mode: time to first token as the consumer sees it (mean over the chats),
and tokens per second (all chats' new tokens / wall time of the batch). The model is
loaded once, before timing, and every mode uses that one instance: the served app is
the demo's ``chat`` body on a ``@app.model`` that returns it. Every configuration runs
ROUNDS times, the best is kept.
Run: .venv/bin/python bench/bench_chat.py [--tokens 64] [--rounds 2]
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from live_server import serve_app

import genq
from genq.demo import llm

PROMPT = "Write a long story about a lighthouse keeper and a storm."


@dataclass
class Figures:
    ttft: float  # mean seconds to first piece, at the consumer
    tokens_per_s: float  # all new tokens / wall time


def _tokens_since(model: llm.ChatModel, started: float) -> int:
    return sum(r.tokens for r in model.recent if r.started >= started)


def chat_app(model: llm.ChatModel) -> genq.App:
    """The demo's ``chat`` on an already loaded model (no ``from __future__ import
    annotations`` here: ``Annotated[..., shared]`` names a local model)."""
    app = genq.App("bench-chat")

    @app.model()
    def shared() -> llm.ChatModel:
        return model

    @app.function(concurrency=4, timeout=600)
    def chat(message: str, llm_model: Annotated[llm.ChatModel, shared],
             max_new_tokens: int = 256, temperature: float = 0.7,
             progress: genq.Progress = genq.Progress()) -> Iterator[str]:
        yield from llm_model.chat(message, (), max_new_tokens, temperature,
                                  progress=progress)

    return app


def run_direct(model: llm.ChatModel, concurrent: int, tokens: int) -> Figures:
    firsts: list[float] = []
    barrier = threading.Barrier(concurrent + 1)

    def one() -> None:
        barrier.wait()
        start = time.perf_counter()
        first = None
        for _ in model.chat(PROMPT, max_new_tokens=tokens, temperature=0):
            if first is None:
                first = time.perf_counter() - start
        firsts.append(first or 0.0)

    threads = [threading.Thread(target=one) for _ in range(concurrent)]
    for t in threads:
        t.start()
    began = time.monotonic()
    barrier.wait()
    wall = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    return Figures(statistics.mean(firsts), _tokens_since(model, began) / wall)


async def _stream_many(model: llm.ChatModel, client: genq.AsyncClient, concurrent: int,
                       tokens: int) -> Figures:
    firsts: list[float] = []

    async def one() -> None:
        start = time.perf_counter()
        first = None
        async for _ in client.stream("chat", message=PROMPT, max_new_tokens=tokens,
                                     temperature=0):
            if first is None:
                first = time.perf_counter() - start
        firsts.append(first or 0.0)

    began = time.monotonic()
    wall = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrent):
            tg.start_soon(one)
    wall = time.perf_counter() - wall
    return Figures(statistics.mean(firsts), _tokens_since(model, began) / wall)


def best(runs: list[Figures]) -> Figures:
    return Figures(min(r.ttft for r in runs), max(r.tokens_per_s for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    t = time.perf_counter()
    model = llm.ChatModel.load()
    print(f"model loaded in {time.perf_counter() - t:.1f} s")
    for _ in model.chat(PROMPT, max_new_tokens=8, temperature=0):  # warm-up
        pass
    app = chat_app(model)

    results: dict[tuple[str, int], list[Figures]] = {}
    with tempfile.TemporaryDirectory() as tmp, serve_app(app, Path(tmp) / "http.db") as url:

        async def local_mode(concurrent: int) -> Figures:
            async with app.local(Path(tmp) / "local.db") as client:
                return await _stream_many(model, client, concurrent, args.tokens)

        async def http_mode(concurrent: int) -> Figures:
            async with genq.AsyncClient(url) as client:
                return await _stream_many(model, client, concurrent, args.tokens)

        modes: dict[str, Callable[[int], Figures]] = {
            "direct": lambda c: run_direct(model, c, args.tokens),
            "local": lambda c: _run(local_mode, c),
            "http": lambda c: _run(http_mode, c),
        }
        for _ in range(args.rounds):
            for concurrent in (1, 4):
                for name, mode in modes.items():
                    results.setdefault((name, concurrent), []).append(mode(concurrent))

    print(f"\n{args.tokens} new tokens per chat, greedy; best of {args.rounds} rounds")
    print(f"{'mode':>7} {'chats':>5} {'TTFT s':>8} {'tok/s':>7} {'vs direct':>10}")
    for concurrent in (1, 4):
        direct = best(results[("direct", concurrent)])
        for name in ("direct", "local", "http"):
            f = best(results[(name, concurrent)])
            ratio = f.tokens_per_s / direct.tokens_per_s
            print(f"{name:>7} {concurrent:>5} {f.ttft:8.3f} {f.tokens_per_s:7.1f} "
                  f"{ratio:9.2f}x")


def _run(fn: Callable[[int], Awaitable[Figures]], concurrent: int) -> Figures:
    async def go() -> Figures:
        return await fn(concurrent)

    return anyio.run(go)


if __name__ == "__main__":
    main()
