"""A job's durable event log as the Responses API's stream events, numbered.

``sequence_number`` is a pure function of the job's log: the translator folds the log
from its first event (``textfold.py``) and numbers what it produces 0, 1, 2, ... in
order. Any front end, after any restart, reading the same log produces the same events
with the same numbers, so ``starting_after=N`` is answered by replaying the log and
sending only the events numbered above N: nothing lost, nothing repeated. The cost is
one read of the job's log up to where the client was (a page of up to 1 MiB at a time,
from the store), small for text.

What a background response sends, in OpenAI's order:
``response.created`` (queued), ``response.queued``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``..., ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, then one of
``response.completed``, ``response.failed`` or ``response.cancelled`` (genq's name for
the end of a cancelled response; OpenAI's SDK passes it through with its ``type``).
"""

from __future__ import annotations

from typing import Any

from genq.models import Event, EventType, Job
from genq.server.openai.textfold import Delta, End, Started, TextFold

STATUS_OF_JOB = {"queued": "queued", "running": "in_progress", "succeeded": "completed",
                 "failed": "failed", "expired": "failed", "cancelled": "cancelled"}


def response_id(job_id: str) -> str:
    return f"resp_{job_id}"


def job_id_of(response: str) -> str:
    """The job a response id names; an id of another form names no job (404 later)."""
    return response.removeprefix("resp_")


class ResponseEvents:
    """Feed a job's events in log order; get numbered Responses stream events."""

    def __init__(self, job: Job, model: str) -> None:
        self.job_id = job.id
        self.model = model
        self.created_at = int(job.created_at)
        self.fold = TextFold()
        self.next_number = 0
        self.status = "queued"

    @property
    def item_id(self) -> str:
        return f"msg_{self.job_id}"

    def feed(self, event: Event) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.next_number == 0:
            out.append({"type": "response.created", "response": self.snapshot()})
            if event.type is EventType.QUEUED:
                out.append({"type": "response.queued", "response": self.snapshot()})
        for step in self.fold.feed(event):
            out += self._events_of(step)
        for item in out:
            item["sequence_number"] = self.next_number
            self.next_number += 1
        return out

    def _events_of(self, step: Started | Delta | End) -> list[dict[str, Any]]:
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        if isinstance(step, Started):
            self.status = "in_progress"
            return [{"type": "response.in_progress", "response": self.snapshot()},
                    {"type": "response.output_item.added", "output_index": 0,
                     "item": self._item("", "in_progress")},
                    {"type": "response.content_part.added", **where,
                     "part": _part("")}]
        if isinstance(step, Delta):
            return [{"type": "response.output_text.delta", **where, "delta": step.text,
                     "logprobs": []}]
        self.status = step.status
        if step.status == "completed":
            return [{"type": "response.output_text.done", **where, "text": step.text,
                     "logprobs": []},
                    {"type": "response.content_part.done", **where, "part": _part(step.text)},
                    {"type": "response.output_item.done", "output_index": 0,
                     "item": self._item(step.text, "completed")},
                    {"type": "response.completed", "response": self.snapshot()}]
        return [{"type": f"response.{step.status}", "response": self.snapshot()}]

    def _item(self, text: str, status: str) -> dict[str, Any]:
        return {"id": self.item_id, "type": "message", "role": "assistant", "status": status,
                "content": [_part(text)] if text or status == "completed" else []}

    def snapshot(self, status: str | None = None) -> dict[str, Any]:
        """The Response object as far as the log has been fed."""
        status = status or self.status
        ended = self.fold.ended
        text = ended.text if ended is not None else self.fold.sent
        output = [] if not self.fold.started else [
            self._item(text, "completed" if status == "completed" else
                       "incomplete" if ended is not None else "in_progress")]
        error = None
        if ended is not None and ended.error is not None:
            error = {"code": "server_error",
                     "message": str(ended.error.get("message") or ended.error)}
        tokens = self.fold.chunks
        return {"id": response_id(self.job_id), "object": "response",
                "created_at": self.created_at, "status": status, "model": self.model,
                "output": output, "error": error, "incomplete_details": None,
                "instructions": None, "metadata": {}, "parallel_tool_calls": False,
                "tool_choice": "none", "tools": [], "text": {"format": {"type": "text"}},
                "usage": {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": tokens,
                          "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": tokens}}


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
