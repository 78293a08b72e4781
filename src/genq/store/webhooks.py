"""What a store keeps for a job's webhook (genq.webhooks), and the calls it answers.

One record per job with a webhook: where to send, which events, which secret signs,
how far into the job's event log the sender has looked (``cursor``), and the one
delivery in flight (``pending``), fixed when it is made: its ``webhook-id`` and body
stay the same on every attempt, across restarts, so receivers can deduplicate. A job's
next delivery is made only once the pending one succeeded or expired, which keeps a
job's deliveries in order. Each attempt is appended to the job's attempt log (the last
``MAX_ATTEMPTS_KEPT``), what ``GET /api/jobs/{id}/webhooks`` shows.

A record is due at a time; ``claim_due`` hands due records to one sender at a time by
moving their due time ``lease`` seconds on and bumping a fencing ``token``, so with
Redis and many front ends each delivery is sent by one process at a time, and one
that died mid-attempt is picked up by another once its lease lapses. ``save`` is
refused (False) once the token moved on. SQLite (``sqlite_webhooks.py``) and Redis
(``redis_webhooks.py``) each implement ``WebhookStore``; the event log itself is the
job's, read with ``Store.read_events``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

MAX_ATTEMPTS_KEPT = 100  # per job: about a day of retries at the longest backoff


@dataclass(slots=True)
class Delivery:
    """One message to the receiver, the same bytes on every attempt."""

    id: str  # the webhook-id header
    type: str  # job.started, job.progress, job.output or job.completed
    body: str  # the JSON sent
    created_at: float
    expires_at: float  # no attempt after this: the delivery is given up
    attempts: int = 0
    next_at: float = 0.0  # the next attempt, after a failure


@dataclass(slots=True)
class Webhook:
    """A job's webhook and how far its deliveries got."""

    job_id: str
    url: str
    events: tuple[str, ...]  # started, progress, output; completed is always sent
    secret: str  # which secret signs: "" the server's, else the API key id that submitted
    created_at: float
    cursor: int = 0  # the last event of the job's log already turned into a delivery
    pending: Delivery | None = None
    coalesced_at: float = 0.0  # when the last progress/output delivery was made
    done_at: float | None = None  # the completed delivery succeeded or expired
    token: int = field(default=0, compare=False)  # the fence of the claim that holds it

    def to_json(self) -> str:
        data = asdict(self)
        del data["token"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, token: int = 0) -> Webhook:
        data = json.loads(text)
        pending = data.pop("pending")
        return cls(**{**data, "events": tuple(data["events"])},
                   pending=None if pending is None else Delivery(**pending), token=token)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery, or the end of trying."""

    webhook_id: str
    type: str
    at: float
    outcome: str  # "delivered", "failed" (tried again later) or "expired" (given up)
    status: int | None = None  # the receiver's HTTP status, if it answered
    error: str | None = None  # why it failed, in a sentence
    duration: float | None = None  # seconds the attempt took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Attempt:
        return cls(**json.loads(text))


class WebhookStore(Protocol):
    async def add(self, hook: Webhook, due: float) -> Webhook:
        """Keep ``hook`` unless the job already has a webhook; the one kept (the first
        submission that names a webhook sets it). Durable when it returns."""

    async def get(self, job_id: str) -> Webhook | None: ...

    async def attempts(self, job_id: str) -> list[Attempt]:
        """The job's attempt log, oldest first (the last MAX_ATTEMPTS_KEPT)."""

    async def claim_due(self, now: float, limit: int, lease: float) -> list[Webhook]:
        """Up to ``limit`` records due by ``now``, earliest first, each now held for
        ``lease`` seconds (due again then) under a new token."""

    async def save(self, hook: Webhook, due: float | None, attempt: Attempt | None) -> bool:
        """Write back a claimed record (``due`` None: finished, never due again) and
        append ``attempt``; False, writing nothing, if its token moved on."""

    async def purge(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` finished records (with their attempts) whose
        ``done_at`` is before ``before``; how many."""
