"""Dynamic batching with a real model: embed jobs/s, batched vs one job per call.

The demo's embedding model (all-MiniLM-L6-v2 on the CPU, genq.demo.embeddings) behind an
``embed`` function, in two configurations run in the same run, same model, same machine:

* ``batched``: ``@app.function(batch_size=32, batch_wait=0.02)``, as the demo declares it:
  jobs queued together are encoded in one forward pass;
* ``single``: ``batch_size=1``: one forward pass per job.

64 concurrent clients (async tasks on ``app.local()``'s client) each submit
single-sentence embed jobs and await their results, until ``--jobs`` have completed.
Figures: jobs/s (completed jobs / wall time, after a warm-up), the mean texts per
forward pass, and the ratio batched / single. Each configuration runs in a fresh child
process (bench/_harness.py), interleaved round after round; medians are reported. The
model is loaded (by the worker, ``@app.model``) before timing.

Run: .venv/bin/python bench/bench_embed.py [--jobs 1024] [--clients 64] [--rounds 2]
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import child_main, machine_line, median_of, run_child, table

import genq
from genq.demo.embeddings import Embedder

WORDS = ("fox", "storm", "market", "bread", "lighthouse", "network", "river", "engine")


def sentence(i: int) -> str:
    """Distinct, realistic-length sentences (so no two jobs are the same input)."""
    a, b, c = WORDS[i % 8], WORDS[(i // 8) % 8], WORDS[(i // 64) % 8]
    return f"Sentence {i}: the {a} and the {b} were seen near the old {c} this morning."


def build_app(batch_size: int, batch_wait: float) -> tuple[genq.App, list[Embedder]]:
    """The demo's embed, with the batching under test. (No ``from __future__ import
    annotations`` in this file: ``Annotated[Embedder, minilm]`` names a local model.)"""
    app = genq.App("bench-embed")
    loaded: list[Embedder] = []

    @app.model()
    def minilm(device: str) -> Iterator[Embedder]:
        model = Embedder.load(device=device)
        loaded.append(model)
        yield model
        model.close()

    @app.function(concurrency=1, batch_size=batch_size, batch_wait=batch_wait)
    def embed(text: list[str], model: Annotated[Embedder, minilm]) -> list[list[float]]:
        return model.encode(text)

    return app, loaded


def child(args: list[str]) -> dict[str, float]:
    batch_size, batch_wait, jobs, clients = int(args[0]), float(args[1]), int(args[2]), \
        int(args[3])
    app, loaded = build_app(batch_size, batch_wait)

    async def main() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            async with app.local(Path(tmp) / "embed.sqlite3") as client:
                started = time.perf_counter()
                await client.run("embed", text="warm-up")  # waits for the model's load
                load_wall = time.perf_counter() - started
                for i in range(64):  # warm the tokenizer and the kernels
                    await client.run("embed", text=sentence(10_000 + i))
                model = loaded[0]
                calls_before, texts_before = model.counts.calls, model.counts.texts
                remaining = iter(range(jobs))

                async def one_client() -> None:
                    for i in remaining:  # shared iterator: clients take the next job
                        vector = await client.run("embed", text=sentence(i))
                        assert len(vector) == 384

                began = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(clients):
                        tg.start_soon(one_client)
                wall = time.perf_counter() - began
                calls = model.counts.calls - calls_before
                texts = model.counts.texts - texts_before
        return {"jobs_per_s": jobs / wall, "wall": wall, "calls": calls,
                "per_call": texts / calls, "load_wall": load_wall}

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait", type=float, default=0.02)
    args = parser.parse_args()

    configs = {"batched": (args.batch_size, args.batch_wait), "single": (1, 0.0)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    print(machine_line())
    for round_no in range(args.rounds):
        for name, (size, wait) in configs.items():
            result = run_child(__file__, "embed", [str(size), str(wait), str(args.jobs),
                                                   str(args.clients)], timeout=900)
            results[name].append(result)
            print(f"round {round_no + 1} {name:>7}: {result['jobs_per_s']:7.1f} jobs/s, "
                  f"{result['per_call']:.1f} texts per forward pass", flush=True)

    single = median_of(results["single"], "jobs_per_s")
    rows = []
    for name, (size, wait) in configs.items():
        rate = median_of(results[name], "jobs_per_s")
        rows.append([name, str(size), f"{wait:g}", f"{rate:.1f}",
                     f"{median_of(results[name], 'per_call'):.1f}", f"{rate / single:.2f}x"])
    print(f"\n{args.jobs} single-sentence embed jobs from {args.clients} concurrent clients; "
          f"median of {args.rounds} rounds")
    print(table(["mode", "batch_size", "batch_wait", "jobs/s", "texts/pass", "vs single"],
                rows))


if __name__ == "__main__":
    if not child_main({"embed": child}):
        main()
