"""A text job's event log read as the text an OpenAI client should see.

Both ``/v1/chat/completions`` and ``/v1/responses`` stream a genq job's ``output``
events as text deltas. A job can start over: a retry, or a graceful shutdown putting a
running job back in the queue, runs the function again from the start, and a second
``started`` follows the first attempt's output. OpenAI's streams cannot take text back,
so the fold keeps what it has already handed out (``sent``) and, in a new attempt, hands
out only what goes past it: a deterministic function (greedy decoding, temperature 0)
continues the client's text exactly where it was. The final text (``End.text``) is
always the last attempt's whole output, so a response's ``output_text`` is right even
when a sampling function said something else the second time.

The fold is a pure function of the log: the same events give the same steps on any
front end, before or after a restart, which is what makes Responses' sequence numbers
resumable (``response_events.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genq.jsoncodec import compact_json
from genq.models import Event, EventType, OutputRef


@dataclass(frozen=True, slots=True)
class Started:
    """The job's first attempt began (later attempts give no step)."""


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class End:
    status: str  # "completed", "failed" or "cancelled"
    text: str
    error: dict[str, Any] | None = None


Step = Started | Delta | End


@dataclass
class TextFold:
    """Text is kept as parts with running lengths: a delta is the tail of one chunk, so
    folding a long generation costs time linear in its length."""

    chunks: int = 0  # output chunks of the current attempt (reported as output tokens)
    started: bool = False
    ended: End | None = None
    _sent: list[str] = field(default_factory=list, repr=False)  # every delta handed out
    _sent_len: int = 0
    _attempt: list[str] = field(default_factory=list, repr=False)  # this attempt's output
    _attempt_len: int = 0
    _outputs: bool = field(default=False, repr=False)  # the attempt has streamed output

    @property
    def sent(self) -> str:
        return "".join(self._sent)

    def feed(self, event: Event) -> list[Step]:
        kind = event.type
        if kind is EventType.OUTPUT:
            chunk = event.data.get("chunk")
            text = chunk if isinstance(chunk, str) else compact_json(chunk)
            self._attempt.append(text)
            self._attempt_len += len(text)
            self.chunks += 1
            self._outputs = True
            return self._catch_up(text)
        if kind is EventType.STARTED:
            first = not self.started
            self.started = True
            self._attempt, self._attempt_len, self.chunks, self._outputs = [], 0, 0, False
            return [Started()] if first else []
        if kind is EventType.SUCCEEDED:
            return self._end("completed", self._final_text(event.data), None)
        if kind in (EventType.FAILED, EventType.EXPIRED):
            error = event.data.get("error") or {"type": "Expired",
                                                "message": event.data.get("reason", "")}
            return self._end("failed", self.sent, error)
        if kind is EventType.CANCELLED:
            return self._end("cancelled", self.sent, None)
        return []

    def _catch_up(self, last: str) -> list[Step]:
        """After ``last`` was added to the attempt: what of it goes past ``sent``."""
        beyond = self._attempt_len - self._sent_len
        if beyond <= 0:
            return []
        delta = last[-beyond:] if beyond <= len(last) else \
            "".join(self._attempt)[self._sent_len:]
        self._sent.append(delta)
        self._sent_len += len(delta)
        return [Delta(delta)]

    def _final_text(self, data: dict[str, Any]) -> str:
        if self._outputs:  # a streaming function: its output is the text
            return "".join(self._attempt)
        result = data.get("result")
        if result is None or OutputRef.from_dict(result) is not None:
            return ""  # too large to inline: the log holds no text of it here
        if not isinstance(result, str):
            result = compact_json(result)
        self.chunks = 1
        return result

    def _end(self, status: str, text: str, error: dict[str, Any] | None) -> list[Step]:
        steps: list[Step] = [] if self.started else [Started()]
        self.started = True
        if status == "completed" and len(text) > self._sent_len:
            delta = text[self._sent_len:]
            self._sent.append(delta)
            self._sent_len += len(delta)
            steps.append(Delta(delta))
        self.ended = End(status, text, error)
        steps.append(self.ended)
        return steps
