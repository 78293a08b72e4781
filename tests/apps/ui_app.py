"""The app the browser tests (tests/test_ui.py) serve: fast, deterministic functions.

Served by a real ``genq serve tests/apps/ui_app.py:app`` subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import anyio
from pydantic import Base64Bytes, Field

import genq
from genq.demo.png import encode_rgb

app = genq.App("ui-test")

COLORS = {"red": (220, 38, 38), "green": (22, 163, 74), "blue": (37, 99, 235)}


def story_text(words: int) -> str:
    """What ``story`` streams: the test compares the page's text with it."""
    return "".join(f"word{i} " for i in range(words))


@app.function(concurrency=4)
async def steps(n: Annotated[int, Field(ge=1, le=100, description="How many steps")] = 10,
                delay: Annotated[float, Field(ge=0, le=2)] = 0.1,
                progress: genq.Progress = genq.Progress()) -> str:
    """Count steps, reporting progress after each one."""
    for i in range(n):
        await anyio.sleep(delay)
        progress(current=i + 1, total=n, unit="steps", desc=f"step {i + 1} of {n}")
    return f"finished {n} steps"


@app.function(concurrency=4)
def story(words: Annotated[int, Field(ge=1, le=1000)] = 30,
          delay: Annotated[float, Field(ge=0, le=2)] = 0.05) -> Iterator[str]:
    """Stream a deterministic text word by word (a blocking sync generator)."""
    for i in range(words):
        time.sleep(delay)
        yield f"word{i} "


@app.function(concurrency=4, retries=1)
def durable_story(words: Annotated[int, Field(ge=1, le=1000)] = 60,
                  delay: Annotated[float, Field(ge=0, le=2)] = 0.1) -> Iterator[str]:
    """Like ``story``, with one retry: a run lost to a server crash runs again."""
    for i in range(words):
        time.sleep(delay)
        yield f"word{i} "


@app.function(concurrency=2)
def slow_first_story(marker: str, words: Annotated[int, Field(ge=1, le=1000)] = 20,
                     first_delay: Annotated[float, Field(ge=0, le=5)] = 1.0,
                     delay: Annotated[float, Field(ge=0, le=2)] = 0.05) -> Iterator[str]:
    """Like ``story``, slow on its first run (while the file ``marker`` does not exist) so
    it outlives a graceful shutdown's grace period, and fast when run again."""
    first = not Path(marker).exists()
    Path(marker).touch()
    for i in range(words):
        time.sleep(first_delay if first else delay)
        yield f"word{i} "


@app.function(concurrency=2)
def image(size: Annotated[int, Field(ge=8, le=256)] = 64,
          color: Literal["red", "green", "blue"] = "blue",
          progress: genq.Progress = genq.Progress()) -> genq.Image:
    """Paint a square image with a diagonal gradient."""
    r, g, b = COLORS[color]
    rows = []
    for y in progress.tqdm(range(size), desc="painting", unit="rows"):
        row = bytearray()
        for x in range(size):
            t = (x + y) / (2 * size)
            row += bytes((int(r * (1 - t) + 255 * t), int(g * (1 - t) + 255 * t),
                          int(b * (1 - t) + 255 * t)))
        rows.append(bytes(row))
    return genq.Image(encode_rgb(size, size, rows), name=f"{color}-{size}.png")


@app.function(concurrency=2)
def frames(count: Annotated[int, Field(ge=1, le=10)] = 3,
           delay: Annotated[float, Field(ge=0, le=2)] = 0.3,
           progress: genq.Progress = genq.Progress()) -> Iterator[genq.Image | genq.File]:
    """Stream preview images one by one, then a CSV file (images as output chunks)."""
    for i in range(count):
        time.sleep(delay)
        progress.log(f"frame {i} ready")
        shade = int(255 * (i + 1) / count)
        rows = [bytes((shade, 64, 255 - shade)) * 16 for _ in range(16)]
        yield genq.Image(encode_rgb(16, 16, rows), name=f"frame-{i}.png")
    yield genq.File(b"frame,shade\n" + b"".join(
        f"{i},{int(255 * (i + 1) / count)}\n".encode() for i in range(count)),
        name="frames.csv", content_type="text/csv")


@app.function(concurrency=2)
async def sleeper(seconds: Annotated[float, Field(gt=0, le=600)] = 60,
                  progress: genq.Progress = genq.Progress()) -> str:
    """Sleep for a while, reporting progress: a job to cancel."""
    steps_ = max(1, int(seconds * 10))
    for i in range(steps_):
        progress((i + 1) / steps_, desc="sleeping")
        await anyio.sleep(seconds / steps_)
    return "rested"


@app.function
def broken(message: str = "the model ran out of memory") -> str:
    """Always fail with a ValueError."""
    raise ValueError(message)


@app.function(concurrency=2)
def echo_chat(message: Annotated[str, Field(min_length=1, max_length=2000)],
              history: list[tuple[str, str]] = [],  # noqa: B006 (pydantic copies input)
              delay: Annotated[float, Field(ge=0, le=1)] = 0.03) -> Iterator[str]:
    """Answer by echoing the message word by word (a chat-style streaming function)."""
    reply = f"You said: {message} (turn {len(history) + 1})"
    for i, word in enumerate(reply.split(" ")):
        time.sleep(delay)
        yield word if i == 0 else " " + word


@app.function
def kitchen_sink(title: Annotated[str, Field(max_length=40)],
                 prompt: Annotated[str, Field(max_length=4000)] = "",
                 count: Annotated[int, Field(ge=1, le=10)] = 3,
                 ratio: Annotated[float, Field(ge=0, le=1)] = 0.5,
                 mode: Literal["fast", "balanced", "best"] = "balanced",
                 upscale: bool = False,
                 tags: list[str] = [],  # noqa: B006
                 photo: Base64Bytes | None = None) -> dict[str, object]:
    """Every kind of form field; returns what it received."""
    return {"title": title, "prompt": prompt, "count": count, "ratio": ratio, "mode": mode,
            "upscale": upscale, "tags": tags,
            "photo_bytes": None if photo is None else len(photo)}
