"""``/v1/responses``: a chat model's answer as a Response, in the foreground or in the
background, and a background response's stream resumed from a sequence number.

A response is a genq job of the chat function; its id is ``resp_<job id>``, so any
front end finds it in the shared store. Without ``background`` the call is a chat
completion in Responses' shape (a streaming client that disconnects cancels the job).
With ``background: true`` the job runs whatever the client does; ``GET
/v1/responses/{id}`` shows it, ``?stream=true&starting_after=N`` replays its events
after N from the job's durable log (``response_events.py``), and ``POST
/v1/responses/{id}/cancel`` cancels it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from genq.errors import JobNotFound
from genq.jsoncodec import compact_json
from genq.models import Job
from genq.openai_models import openai_models
from genq.server.caller import authenticate
from genq.server.openai.access import (
    json_response,
    openai_endpoint,
    read_body,
)
from genq.server.openai.jobs import JOB_HEADER, submit
from genq.server.openai.params import bad, model_for, responses_request
from genq.server.openai.response_events import ResponseEvents, job_id_of
from genq.server.streams import counted_stream

if TYPE_CHECKING:
    from genq.server.api import ServerState

CANCEL_WAIT = 5.0  # seconds a cancel waits for the job to end before answering


def _frame(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {compact_json(event)}\n\n"


async def _job(state: ServerState, owner: str, response: str) -> tuple[Job, str]:
    """The owner's job a response id names, and the chat model name it answers as."""
    job = await state.jobs.get(owner, job_id_of(response))
    model = openai_models(state.app).for_function(job.function)
    if model is None:  # a job of a function no chat model serves is no response
        raise JobNotFound(f"no response {response}", response_id=response)
    return job, model.name


async def _events(state: ServerState, owner: str, job: Job, model: str, after: int,
                  live: bool = True) -> AsyncIterator[list[dict[str, Any]]]:
    """The response's events numbered above ``after``, a log batch at a time; followed
    live to the end, or (``live=False``) only what the log holds now."""
    translator = ResponseEvents(job, model)
    if live:
        batches: AsyncIterator[Any] = state.jobs.follow(owner, job.id)
    else:
        batches = _pages(state, owner, job.id)
    async for batch in batches:
        out = [e for event in batch for e in translator.feed(event)
               if e["sequence_number"] > after]
        if out:
            yield out


async def _pages(state: ServerState, owner: str, job_id: str) -> AsyncIterator[list[Any]]:
    after = 0
    while page := await state.jobs.read_events(owner, job_id, after):
        yield page
        after = page[-1].id


async def _snapshot(state: ServerState, owner: str, job: Job, model: str) -> dict[str, Any]:
    translator = ResponseEvents(job, model)
    async for page in _pages(state, owner, job.id):
        for event in page:
            translator.feed(event)
    return translator.snapshot()


def _stream(request: Request, state: ServerState, owner: str, job: Job, model: str,
            after: int, cancel_on_disconnect: bool) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        ended = False
        try:
            async for events in _events(state, owner, job, model, after):
                yield "".join(map(_frame, events)).encode()
                ended = events[-1]["type"] in ("response.completed", "response.failed",
                                               "response.cancelled")
        finally:
            if cancel_on_disconnect and not ended:
                with anyio.CancelScope(shield=True):
                    await state.jobs.cancel(owner, job.id, job.ticket)

    return counted_stream(request, owner, frames(), headers={JOB_HEADER: job.id})


@openai_endpoint
async def create_response(request: Request) -> Response:
    state, caller = authenticate(request)
    body = await read_body(request, state.settings.max_body)
    model = model_for(state.app, body, "chat")
    chat = responses_request(body)
    background = bool(body.get("background"))
    if background and body.get("store") is False:
        raise bad("store", "a background response is stored: 'store' cannot be false")
    job = await submit(state, caller, model, chat, param="input")
    if body.get("stream"):
        return _stream(request, state, caller.owner, job, model.name, -1,
                       cancel_on_disconnect=not background)
    if background:
        snapshot = ResponseEvents(job, model.name).snapshot("queued")
    else:
        await state.jobs.wait(caller.owner, job.id)
        snapshot = await _snapshot(state, caller.owner, job, model.name)
    return json_response({**snapshot, "background": background},
                         headers={JOB_HEADER: job.id})


def _starting_after(request: Request) -> int:
    raw = request.query_params.get("starting_after")
    if raw is None:
        return -1
    try:
        value = int(raw)
    except ValueError:
        raise bad("starting_after", "'starting_after' must be an integer") from None
    if value < -1:
        raise bad("starting_after", "'starting_after' must be at least -1")
    return value


@openai_endpoint
async def get_response(request: Request) -> Response:
    """GET /v1/responses/{id}: the response now; ``?stream=true`` its events (after
    ``starting_after``), live to its end."""
    state, caller = authenticate(request)
    job, model = await _job(state, caller.owner, request.path_params["response_id"])
    if request.query_params.get("stream", "").lower() == "true":
        return _stream(request, state, caller.owner, job, model, _starting_after(request),
                       cancel_on_disconnect=False)
    return json_response(await _snapshot(state, caller.owner, job, model),
                         headers={JOB_HEADER: job.id})


@openai_endpoint
async def cancel_response(request: Request) -> Response:
    """POST /v1/responses/{id}/cancel: cancel, then answer once the job has ended (up to
    CANCEL_WAIT seconds; a running function stops at its next output or progress)."""
    state, caller = authenticate(request)
    job, model = await _job(state, caller.owner, request.path_params["response_id"])
    await state.jobs.cancel(caller.owner, job.id)
    with anyio.move_on_after(CANCEL_WAIT):
        await state.jobs.wait(caller.owner, job.id)
    return json_response(await _snapshot(state, caller.owner, job, model),
                         headers={JOB_HEADER: job.id})

