"""``POST /v1/embeddings`` and ``POST /v1/images/generations``: one genq job per text or
image, so genq's dynamic batching groups them with every other caller's (a batched
function runs up to ``batch_size`` queued jobs as one call), and each is listed and
cancellable like any job. The first job's id is the ``X-Genq-Job-Id`` header.
"""

from __future__ import annotations

import base64
import struct
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from genq.models import ArtifactRef, Job
from genq.server.auth import Caller
from genq.server.caller import authenticate
from genq.server.openai.access import (
    OpenAIError,
    json_response,
    openai_endpoint,
    read_body,
)
from genq.server.openai.jobs import JOB_HEADER, failure, submit
from genq.server.openai.params import embedding_inputs, image_request, model_for

if TYPE_CHECKING:
    from genq.server.api import ServerState

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request
MAX_IMAGES = 10


async def _results(state: ServerState, owner: str, jobs: list[Job]) -> list[Any]:
    """Each job's result, in order, once all have ended; a failed one fails the call."""
    results: list[Any] = [None] * len(jobs)

    async def one(index: int, job: Job) -> None:
        ended = await state.jobs.wait(owner, job.id)
        if ended.status.value != "succeeded":
            raise failure("cancelled" if ended.status.value == "cancelled" else "failed",
                          ended.error)
        results[index] = await state.jobs.result_value(owner, job.id)

    await _together([(one, index, job) for index, job in enumerate(jobs)])
    return results


async def _submit_all(state: ServerState, caller: Caller, model: Any, requests: list[Any],
                      param: str) -> list[Job]:
    jobs: list[Job | None] = [None] * len(requests)

    async def one(index: int, request: Any) -> None:
        jobs[index] = await submit(state, caller, model, request, param=param)

    await _together([(one, index, request) for index, request in enumerate(requests)])
    return [job for job in jobs if job is not None]


async def _together(calls: list[tuple[Any, ...]]) -> None:
    """Run the calls at once; the first error is raised as itself (not in a group), so
    it is answered like any other."""
    try:
        async with anyio.create_task_group() as tg:
            for fn, *args in calls:
                tg.start_soon(fn, *args)
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _vector(value: Any, encoding: str) -> list[float] | str:
    if not isinstance(value, list) or not all(isinstance(x, int | float) for x in value):
        raise OpenAIError(500, "the embedding function did not return a list of numbers",
                          code="bad_embedding")
    if encoding == "base64":  # what the openai SDK asks for: float32, little-endian
        return base64.b64encode(struct.pack(f"<{len(value)}f", *value)).decode()
    return [float(x) for x in value]


@openai_endpoint
async def embeddings(request: Request) -> Response:
    state, caller = authenticate(request)
    body = await read_body(request, state.settings.max_body)
    model = model_for(state.app, body, "embeddings")
    texts = embedding_inputs(body, MAX_EMBEDDING_INPUTS)
    jobs = await _submit_all(state, caller, model, texts, "input")
    vectors = await _results(state, caller.owner, jobs)
    encoding = body.get("encoding_format") or "float"
    return json_response({
        "object": "list", "model": model.name,
        "data": [{"object": "embedding", "index": i, "embedding": _vector(v, encoding)}
                 for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": 0, "total_tokens": 0}}, headers={JOB_HEADER: jobs[0].id})


def _artifact(result: Any) -> ArtifactRef:
    """The image a job returned (itself, or the first of a list)."""
    for value in result if isinstance(result, list) else [result]:
        ref = ArtifactRef.from_dict(value)
        if ref is not None:
            return ref
    raise OpenAIError(500, "the image function returned no image (genq.Image, bytes or "
                      "PIL)", code="bad_image")


@openai_endpoint
async def image_generations(request: Request) -> Response:
    state, caller = authenticate(request)
    body = await read_body(request, state.settings.max_body)
    model = model_for(state.app, body, "images")
    image, n = image_request(body, MAX_IMAGES)
    jobs = await _submit_all(state, caller, model, [image] * n, "prompt")
    data = []
    for result in await _results(state, caller.owner, jobs):
        ref = _artifact(result)
        # b64_json by default: a url needs the caller's API key to be fetched.
        if body.get("response_format") == "url":
            data.append({"url": f"{str(request.base_url).rstrip('/')}/api/artifacts/{ref.id}",
                         "revised_prompt": None})
        else:
            _, raw = await state.jobs.artifact(caller.owner, ref.id)
            data.append({"b64_json": base64.b64encode(raw).decode(), "revised_prompt": None})
    return json_response({"created": int(jobs[0].created_at), "data": data},
                         headers={JOB_HEADER: jobs[0].id})
