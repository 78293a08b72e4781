"""Where a job's output starts over: ``genq.Restart``, and the watch that finds it.

A job runs again from the beginning after a retry, after its worker was lost (a crash,
a lapsed lease) or after a shutdown put it back in the queue; its log keeps the
abandoned run's output chunks, then the new run's. The web UI replaces the output when
the new run starts. The clients' output streams (``stream()``, ``job.outputs()``) yield
chunks live, as they are produced, so they cannot take back what they already gave:
instead they yield one ``Restart`` at the boundary, where a consumer clears what it
shows. It is yielded only when the abandoned run had output (otherwise nothing needs
clearing) and is never a ``str``, so ``"".join(stream)`` cannot silently return the
abandoned run's text glued to the final one (it raises TypeError); ``run()`` returns
the final run's text alone. Its ``str()`` is a visible line, so a loop that prints
each piece marks the boundary too.

``AttemptWatch`` reads a job's events in order and says where a new run replaces
output seen before: the clients' streams, the Gradio adapter and ``genq run`` all use
it, so they agree with each other and with the web UI (a second ``started`` event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genq.models import Event, EventType


@dataclass(frozen=True, slots=True)
class Restart:
    """In an output stream: the job started over, and the ``discarded`` chunks before
    this marker (its previous run's) are not part of its result.

    ``attempt`` is the new run's attempt number (a run given back by a shutdown keeps
    its number) and ``reason`` why the previous run ended, as its ``retrying`` event
    said ("" if the log did not say).
    """

    attempt: int
    discarded: int
    reason: str = ""

    @property
    def notice(self) -> str:
        return f"— attempt {self.attempt} restarted, output so far discarded —"

    def __str__(self) -> str:
        return f"\n{self.notice}\n"


def retry_reason(data: dict[str, Any]) -> str:
    """Why a run ended, from its ``retrying`` event: the reason (a shutdown, a lost
    worker) or the error that is retried."""
    error = data.get("error") or {}
    if data.get("reason"):
        return str(data["reason"])
    if isinstance(error, dict) and error:
        return f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return ""


class AttemptWatch:
    """Fed a job's events in order from its first, answers a ``Restart`` for the event
    that starts a new run after the previous one produced output."""

    __slots__ = ("_outputs", "_reason", "_started")

    def __init__(self) -> None:
        self._started = False
        self._outputs = 0  # output chunks of the current run
        self._reason = ""

    def see(self, event: Event) -> Restart | None:
        kind = event.type
        if kind is EventType.OUTPUT:
            self._outputs += 1
        elif kind is EventType.RETRYING:
            self._reason = retry_reason(event.data)
        elif kind is EventType.STARTED:
            discarded, self._outputs = self._outputs, 0
            again, self._started = self._started, True
            if again and discarded:
                return Restart(int(event.data.get("attempt") or 0), discarded, self._reason)
        return None
