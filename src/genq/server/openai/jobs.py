"""Submitting a ``/v1`` call as a genq job, and streaming a response over SSE.

Every OpenAI call is an ordinary job of the caller's owner: it is queued, limited,
batched, listed and cancellable like one submitted to ``/api/jobs``, and its id travels
in the ``X-Genq-Job-Id`` header so a genq-aware client can reattach to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genq.errors import GenqError
from genq.models import Job
from genq.openai_models import ExposedModel
from genq.server.auth import Caller
from genq.server.openai.access import OpenAIError
from genq.server.openai.params import bad

JOB_HEADER = "X-Genq-Job-Id"

if TYPE_CHECKING:
    from genq.server.api import ServerState

async def submit(state: ServerState, caller: Caller, model: ExposedModel, request: Any,
                 param: str = "messages") -> Job:
    """Map the request onto the function's input (a mapping's ValueError is a 400 naming
    ``param``) and submit it as the caller's job, under its owner's quotas."""
    try:
        inputs = model.to_input(request)
    except ValueError as exc:
        raise bad(param, str(exc)) from None
    try:
        submitted = await state.jobs.submit(caller.owner, model.function, inputs,
                                            quota=state.quota(caller))
    except GenqError as exc:
        state.metrics.rejected.labels(model.function, exc.code).inc()
        raise
    if submitted.created:
        state.metrics.submitted.labels(model.function).inc()
    job: Job = submitted.job
    job.ticket = submitted.ticket  # a disconnect lets go of this request alone (dedupe)
    return job


def failure(status: str, error: dict[str, Any] | None) -> OpenAIError:
    """A job that ended without its text: failed (500, which OpenAI clients retry) or
    cancelled (410, which they do not: a cancel was somebody's decision)."""
    if status == "cancelled":
        return OpenAIError(410, "the job was cancelled before it finished", code="job_cancelled")
    message = str((error or {}).get("message") or "the job failed")
    return OpenAIError(500, f"the function failed: {message}", code="job_failed")
