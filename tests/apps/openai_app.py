"""An app served over the OpenAI API in tests: a deterministic streaming chat (so a
resumed stream can be checked character by character without a model), a batched
embedding function that records its batches, and a tiny PNG renderer."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import genq
from genq.demo.png import encode_rgb
from genq.openai_models import openai_models

app = genq.App("openai-test")

SLOW = "slow:"  # a message starting so is answered at 20 words a second, else 200
BATCHES: list[int] = []  # the size of every embed call


def words(messages: list[dict[str, Any]], count: int) -> list[str]:
    """What ``chat`` streams for these messages: deterministic, distinct words."""
    seed = hashlib.sha256(messages[-1]["content"].encode()).hexdigest()
    return [f"{seed[i % 60:i % 60 + 4]}{i} " for i in range(count)]


@app.function(concurrency=8)
def chat(messages: list[dict[str, Any]], max_tokens: int = 20,
         temperature: float = 0.0) -> Iterator[str]:
    pace = 0.05 if messages[-1]["content"].startswith(SLOW) else 0.005
    for word in words(messages, max_tokens):
        time.sleep(pace)
        yield word


@app.function(concurrency=2)
def fails(messages: list[dict[str, Any]]) -> str:
    raise RuntimeError("the model fell over")


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255 - 0.5 for b in digest[:16]]


@app.function(concurrency=1, batch_size=16, batch_wait=0.2)
def embed(text: list[str]) -> list[list[float]]:
    BATCHES.append(len(text))
    return [vector(t) for t in text]


@app.function(concurrency=2)
def picture(prompt: str, size: int = 8) -> genq.Image:
    shade = hashlib.sha256(prompt.encode()).digest()[0]
    rows = [bytes([shade, 255 - shade, 128]) * size for _ in range(size)]
    return genq.Image(encode_rgb(size, size, rows), name="picture.png")


models = openai_models(app)
models.chat("echo-1", chat)
models.chat("fails-1", fails)
models.embeddings("hash-embed", embed)
models.images("tiny-png", picture)
