"""The app bench_output_memory.py and bench_soak.py serve with ``genq serve``.

* ``chunks``: a ``def`` generator yielding ``n`` text chunks of ``size`` bytes each, each
  a new string (as a model's output would be), so nothing is shared between chunks.
* ``text``: a plain function returning ``size`` bytes of text as its result.
* ``noop``: the short job of the soak.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import genq

app = genq.App("memory-bench")


def text_of(size: int, tag: int) -> str:
    stamp = f"{tag:012d}"
    return "x" * max(0, size - len(stamp)) + stamp[-size:] if size else ""


@app.function(concurrency=4)
def chunks(n: int = 100, size: int = 1 << 20) -> Iterator[str]:
    for i in range(n):
        yield text_of(size, i)


@app.function(concurrency=4)
def text(size: int = 20 << 20) -> str:
    return text_of(size, 0)


@app.function(concurrency=64, max_queue=100_000)
async def noop() -> None:
    return None


def _snapshot_on_signal(directory: str) -> None:
    """``GENQ_BENCH_TRACEMALLOC=DIR``: trace allocations from start-up, and on each
    SIGUSR1 write a snapshot to DIR/snapshot-N (bench_soak.py --trace diffs them)."""
    import signal
    import tracemalloc
    from pathlib import Path

    tracemalloc.start(10)
    taken = [0]

    def take(*_: object) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(Path(directory) / f"snapshot-{taken[0]}"))

    signal.signal(signal.SIGUSR1, take)


if os.environ.get("GENQ_BENCH_TRACEMALLOC"):
    _snapshot_on_signal(os.environ["GENQ_BENCH_TRACEMALLOC"])
