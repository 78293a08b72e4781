"""The app bench_output_memory.py and bench_soak.py serve with ``genq serve``.

* ``chunks``: a ``def`` generator yielding ``n`` text chunks of ``size`` bytes each, each
  a new string (as a model's output would be), so nothing is shared between chunks.
* ``text``: a plain function returning ``size`` bytes of text as its result.
* ``noop``: the short job of the soak.
"""

from __future__ import annotations

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
