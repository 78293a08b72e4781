"""``POST /v1/chat/completions``, streaming and not, as a genq job of the chat function.

Both forms read the job's event log the same way (``ChatRun``): text deltas with
restarts folded in (``textfold.py``), ``stop`` sequences cut on the server (the text
before the first one is kept, and the job is cancelled so the model stops generating),
``max_tokens`` passed to the function by its mapping. A client that disconnects from a
streaming completion cancels its job, as OpenAI does; a genq-aware client that wants
the job to go on reattaches with the ``X-Genq-Job-Id`` header's id on the native API
instead (or uses ``/v1/responses`` with ``background: true``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from genq.jsoncodec import compact_json
from genq.models import Job
from genq.server.caller import authenticate
from genq.server.openai.access import (
    error_body,
    json_response,
    openai_endpoint,
    read_body,
)
from genq.server.openai.jobs import JOB_HEADER, failure, submit
from genq.server.openai.params import chat_request, model_for
from genq.server.openai.textfold import Delta, End, TextFold
from genq.server.streams import counted_stream

if TYPE_CHECKING:
    from genq.server.api import ServerState


class StopScanner:
    """Cut streamed text at the first stop sequence, holding back only what could be the
    start of one (at most the longest stop's length minus one characters)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.keep = max((len(s) for s in stops), default=1) - 1
        self.held = ""
        self.hit = False

    def push(self, text: str) -> str:
        if not self.stops:
            return text
        self.held += text
        cuts = [i for s in self.stops if (i := self.held.find(s)) >= 0]
        if cuts:
            self.hit = True
            out, self.held = self.held[:min(cuts)], ""
            return out
        ready = max(0, len(self.held) - self.keep)
        out, self.held = self.held[:ready], self.held[ready:]
        return out

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


class ChatRun:
    """One completion's job, followed: ``deltas()`` yields text; then ``finish_reason``
    is set, or ``error`` (the job failed or was cancelled by someone else)."""

    def __init__(self, state: ServerState, owner: str, job: Job,
                 stops: tuple[str, ...], max_tokens: int | None) -> None:
        self.state, self.owner, self.job = state, owner, job
        self.scanner = StopScanner(stops)
        self.max_tokens = max_tokens
        self.fold = TextFold()
        self.finish_reason: str | None = None
        self.error: End | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    async def deltas(self) -> AsyncIterator[str]:
        async for texts in self.batches():
            for text in texts:
                yield text

    async def batches(self) -> AsyncIterator[list[str]]:
        """The text of each batch of log events committed together: one write each."""
        async for batch in self.state.jobs.follow(self.owner, self.job.id):
            texts: list[str] = []
            for event in batch:
                for step in self.fold.feed(event):
                    if isinstance(step, Delta):
                        text = self.scanner.push(step.text)
                        if text:
                            texts.append(text)
                        if self.scanner.hit:
                            self.finish_reason = "stop"
                    elif isinstance(step, End):
                        if step.status != "completed":
                            self.error = step
                        else:
                            if rest := self.scanner.flush():
                                texts.append(rest)
                            self.finish_reason = ("length" if self.max_tokens is not None
                                                  and self.fold.chunks >= self.max_tokens
                                                  else "stop")
                    if self.done:
                        break
                if self.done:
                    break
            if texts:
                yield texts
            if self.done:
                if self.scanner.hit:
                    await self.cancel()  # stop generating what nobody will read
                return

    async def cancel(self) -> None:
        """Stop the job (a stop sequence was met, or the client left)."""
        with anyio.CancelScope(shield=True):
            await self.state.jobs.cancel(self.owner, self.job.id, self.job.ticket)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": 0, "completion_tokens": self.fold.chunks,
                "total_tokens": self.fold.chunks}


@openai_endpoint
async def chat_completions(request: Request) -> Response:
    state, caller = authenticate(request)
    body = await read_body(request, state.settings.max_body)
    model = model_for(state.app, body, "chat")
    chat = chat_request(body)
    job = await submit(state, caller, model, chat)
    run = ChatRun(state, caller.owner, job, chat.stop, chat.max_tokens)
    headers = {JOB_HEADER: job.id}
    head = {"id": f"chatcmpl-{job.id}", "created": int(job.created_at), "model": model.name,
            "system_fingerprint": None}
    if body.get("stream"):
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return counted_stream(request, caller.owner, _chunks(run, head, usage), headers=headers)
    text = "".join([piece async for piece in run.deltas()])
    if run.error is not None:
        raise failure(run.error.status, run.error.error)
    return json_response({**head, "object": "chat.completion", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": None, "finish_reason": run.finish_reason}],
        "usage": run.usage()}, headers=headers)


def _choices(chunk: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    return {**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": None}]}


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + compact_json(payload).encode() + b"\n\n"


async def _chunks(run: ChatRun, head: dict[str, Any], usage: bool) -> AsyncIterator[bytes]:
    """OpenAI's chunk stream: the role, content deltas, the finish reason, the usage
    when asked for, ``[DONE]``. A failed job ends it with an ``error`` object (the SDK
    raises it) and no ``[DONE]``."""
    chunk = {**head, "object": "chat.completion.chunk"}

    def choice(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _data({**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}]})

    # A content chunk is this template around the text's JSON: one encode per delta
    # instead of a whole object's, the cost that matters at thousands of chunks a second.
    before, after = compact_json(_choices(chunk, {"content": "\0"})).split('"\\u0000"')
    try:
        yield choice({"role": "assistant", "content": ""})
        async for texts in run.batches():
            yield "".join([f"data: {before}{compact_json(t)}{after}\n\n"
                           for t in texts]).encode()
        if run.error is not None:
            message = failure(run.error.status, run.error.error)
            yield _data(error_body(message.status, message.message, message.code))
            return
        yield choice({}, run.finish_reason)
        if usage:
            yield _data({**chunk, "choices": [], "usage": run.usage()})
        yield b"data: [DONE]\n\n"
    finally:
        if not run.done:  # the client went away mid-stream: stop the work it asked for
            await run.cancel()
