"""The demo app served by ``genq demo``: real CPU work that shows genq's mechanics.

* ``render``: a Julia-set renderer seeded by the prompt; an honest CPU stand-in for an
  image model (there is no GPU here), reporting progress row by row and cached by input.
* ``primes``: a blocking sync generator streaming primes as a sieve finds them.
* ``countdown``: a long job to try cancellation, reconnects and restarts on.
* ``download_model``: a resumable, sha256-verified HTTP download with bytes/rate/ETA.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from typing import Annotated

from pydantic import Field

import genq
from genq.downloads import DownloadError, download
from genq.png import encode_rgb

app = genq.App("demo")


@app.function(concurrency=2, timeout=300, cache=True)
def render(prompt: Annotated[str, Field(min_length=1, max_length=500)],
           size: Annotated[int, Field(ge=16, le=512)] = 192,
           iterations: Annotated[int, Field(ge=1, le=500)] = 48,
           progress: genq.Progress = genq.Progress()) -> genq.Image:
    """Render a fractal image for a prompt, row by row."""
    digest = hashlib.sha256(prompt.encode()).digest()
    c = complex(-0.8 + digest[0] / 640, 0.156 + digest[1] / 1280)
    hue = digest[2] / 255
    rows = []
    for y in progress.tqdm(range(size), desc="rendering", unit="rows"):
        row = bytearray()
        for x in range(size):
            z = complex(3.0 * x / size - 1.5, 3.0 * y / size - 1.5)
            n = 0
            while abs(z) < 2 and n < iterations:
                z = z * z + c
                n += 1
            t = n / iterations
            row += bytes((int(255 * t), int(255 * (t * hue + (1 - t) * 0.2)),
                          int(255 * (1 - t) * (1 - hue))))
        rows.append(bytes(row))
    return genq.Image(encode_rgb(size, size, rows), name=f"{digest.hex()[:12]}.png")


@app.function(concurrency=4, timeout=600)
def primes(limit: Annotated[int, Field(ge=2, le=10_000_000)] = 5000,
           delay: Annotated[float, Field(ge=0, le=10)] = 0.01) -> Iterator[str]:
    """Stream the primes below ``limit``, pausing ``delay`` s between them."""
    sieve = bytearray([1]) * max(2, limit)
    sieve[0:2] = b"\x00\x00"
    for n in range(2, limit):
        if sieve[n]:
            sieve[n * n::n] = bytes(len(range(n * n, limit, n)))
            yield f"{n} "
            if delay:
                time.sleep(delay)


@app.function(concurrency=4, retries=1)
async def countdown(seconds: Annotated[int, Field(ge=1, le=3600)] = 30,
                    progress: genq.Progress = genq.Progress()) -> str:
    """Count down, reporting progress each second."""
    import anyio

    for i in range(seconds):
        progress(i / seconds, desc=f"{seconds - i} s left")
        await anyio.sleep(1)
    progress(1.0, desc="done")
    return f"counted {seconds} seconds"


@app.function(concurrency=2, retries=5, retry_on=(DownloadError,), retry_backoff=2.0)
def download_model(url: Annotated[str, Field(pattern=r"^https?://")],
                   sha256: Annotated[str | None, Field(pattern=r"^[0-9a-fA-F]{64}$")] = None,
                   filename: Annotated[str | None, Field(pattern=r"^[\w.-]+$")] = None,
                   progress: genq.Progress = genq.Progress()) -> dict[str, object]:
    """Download a file into $GENQ_DOWNLOADS (default .genq/downloads), resuming after drops
    and restarts, and verify its sha256."""
    name = filename or url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if not name.strip(".") or "/" in name:
        name = "download"
    folder = os.environ.get("GENQ_DOWNLOADS", ".genq/downloads")
    return download(url, os.path.join(folder, name), sha256=sha256, progress=progress).to_dict()
