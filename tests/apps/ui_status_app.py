"""The app of the browser tests about what the job page says (tests/ui/test_ui_status.py):
retried runs with and without output, a resumable download, a chat that loads before
its first token, byte-sized progress, and a quick job for notifications.

Served by a real ``genq serve tests/apps/ui_status_app.py:app`` subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import anyio
from pydantic import Field

import genq
from genq.downloads import download

app = genq.App("ui-status-test")


def first_run(marker: str) -> bool:
    """True the first time a job with this ``marker`` file runs (the file says it ran)."""
    first = not Path(marker).exists()
    Path(marker).touch()
    return first


@app.function(retries=2, retry_on=(RuntimeError,), retry_backoff=0.3)
async def flaky_setup(marker: str, progress: genq.Progress = genq.Progress()) -> str:
    """Fails its first run before any output (a setup error), then succeeds."""
    progress(0.5, desc="loading weights")
    await anyio.sleep(0.2)
    if first_run(marker):
        raise RuntimeError("weights not reachable yet")
    return "ready"


@app.function(retries=1, retry_on=(RuntimeError,), retry_backoff=0.3)
def flaky_story(marker: str, words: Annotated[int, Field(ge=1, le=100)] = 8) -> Iterator[str]:
    """Streams a few words and fails on its first run; the second run streams them all."""
    first = first_run(marker)
    for i in range(words):
        time.sleep(0.05)
        yield f"word{i} "
        if first and i == 2:
            raise RuntimeError("lost the GPU")


@app.function(retries=1, concurrency=1)
def fetch(url: str, dest: str, progress: genq.Progress = genq.Progress()) -> dict[str, object]:
    """Download ``url`` to ``dest`` (resuming a part file left by an earlier run)."""
    return download(url, dest, progress=progress).to_dict()


@app.function(concurrency=1)
def slow_chat(message: Annotated[str, Field(min_length=1, max_length=2000)],
              history: list[tuple[str, str]] = [],  # noqa: B006 (pydantic copies input)
              load: Annotated[float, Field(ge=0, le=30)] = 1.5,
              words: Annotated[int, Field(ge=1, le=500)] = 6,
              delay: Annotated[float, Field(ge=0, le=2)] = 0.05,
              progress: genq.Progress = genq.Progress()) -> Iterator[str]:
    """A chat that spends ``load`` seconds "loading model" before its first token."""
    progress(None, desc="loading model")
    deadline = time.monotonic() + load
    while time.monotonic() < deadline:  # a cancel stops the wait too
        progress.check()
        time.sleep(0.05)
    progress(None, desc="generating")
    reply = [f"reply{i}" for i in range(words)]
    reply[0] = f"To {message!r} (turn {len(history) + 1}):"
    for i, word in enumerate(reply):
        progress.check()
        time.sleep(delay)
        yield word if i == 0 else " " + word


@app.function(concurrency=2)
async def transfer(seconds: Annotated[float, Field(gt=0, le=120)] = 30,
                   progress: genq.Progress = genq.Progress()) -> str:
    """Reports byte progress at 4,001,551.7 B/s (12 of 100 MB) until cancelled."""
    progress(current=12_000_000, total=100_000_000, unit="B", rate=4_001_551.7, eta=22.0,
             desc="copying")
    await anyio.sleep(seconds)
    return "copied"


@app.function(concurrency=4)
async def render(prompt: str = "", seconds: Annotated[float, Field(ge=0, le=60)] = 0.5,
                 progress: genq.Progress = genq.Progress()) -> str:
    """Progress in ten steps over ``seconds``; returns the prompt reversed."""
    for i in range(10):
        progress((i + 1) / 10, desc=f"step {i + 1}")
        await anyio.sleep(seconds / 10)
    return prompt[::-1]


@app.function
async def doomed(progress: genq.Progress = genq.Progress()) -> str:
    """Gets halfway, then fails for good (no retries)."""
    progress(0.5, desc="halfway")
    await anyio.sleep(0.2)
    raise ValueError("the model ran out of memory")
