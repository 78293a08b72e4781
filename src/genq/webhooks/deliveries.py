"""Which delivery comes next for a job: read from its event log after the webhook's
cursor, filtered, coalesced. Pure, so the rules are tested without a receiver.

* ``started`` events are ``job.started``; the terminal events (succeeded, failed,
  cancelled, expired) are ``job.completed``, always sent; ``progress`` and ``output``
  events only when the submission asked for them; other events are skipped.
* Progress and output are coalesced: at most one delivery per ``coalesce`` seconds per
  job, carrying the latest such event of the run since the last one (and how many it
  stands for). Started and completed are never coalesced or delayed.
* Its body is ``{"type", "timestamp", "data"}``: ``data`` is the job's public view
  (``JobInfo.to_dict``) when the delivery is made, plus ``event``, the event it reports.
  Its ``webhook-id`` is ``msg_<job id>_<event id>``: unique, and the same on every try.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from genq.jsoncodec import compact_json
from genq.models import Event, Job, JobInfo
from genq.store.webhooks import Delivery, Webhook

_KINDS = {"started": "started", "progress": "progress", "output": "output",
          "succeeded": "completed", "failed": "completed", "cancelled": "completed",
          "expired": "completed"}
_COALESCED = ("progress", "output")


@dataclass(frozen=True, slots=True)
class NextStep:
    cursor: int  # the log is looked at after this event from now on
    delivery: Delivery | None = None  # the next one to send, if any
    wait_until: float | None = None  # coalescing: look again at this time


def _kind(hook: Webhook, event: Event) -> str | None:
    kind = _KINDS.get(str(event.type))
    return kind if kind is not None and (kind == "completed" or kind in hook.events) else None


def next_step(hook: Webhook, events: list[Event], job: Job, now: float, *,
              coalesce: float, retry_for: float) -> NextStep:
    """What to do with ``events`` (the log after ``hook.cursor``, oldest first)."""
    cursor = hook.cursor
    for i, event in enumerate(events):
        kind = _kind(hook, event)
        if kind is None:
            cursor = event.id
            continue
        if kind not in _COALESCED:
            return NextStep(event.id, _delivery(job, event, kind, now, retry_for))
        if now < hook.coalesced_at + coalesce:
            return NextStep(cursor, wait_until=hook.coalesced_at + coalesce)
        latest, count = event, 0
        for later in events[i:]:
            later_kind = _kind(hook, later)
            if later_kind is not None and later_kind not in _COALESCED:
                break
            if later_kind is not None:
                latest, count = later, count + 1
            cursor = later.id
        kind = _KINDS[str(latest.type)]
        return NextStep(cursor, _delivery(job, latest, kind, now, retry_for, count))
    return NextStep(cursor)


def _delivery(job: Job, event: Event, kind: str, now: float, retry_for: float,
              coalesced: int | None = None) -> Delivery:
    data = JobInfo.from_job(job).to_dict()
    data["event"] = {"id": event.id, "type": str(event.type), "data": event.data,
                     "ts": event.ts}
    if coalesced is not None:
        data["coalesced"] = coalesced  # how many events of the run this one stands for
    timestamp = datetime.fromtimestamp(event.ts, tz=UTC).isoformat().replace("+00:00", "Z")
    body = compact_json({"type": f"job.{kind}", "timestamp": timestamp, "data": data})
    return Delivery(id=f"msg_{job.id}_{event.id}", type=f"job.{kind}", body=body,
                    created_at=now, expires_at=now + retry_for, next_at=now)
