"""Warm routing: which queued job a claiming worker takes, given the models it holds.

A keyed model (``@app.model(key=...)``) costs seconds to load and a replica holds only a
few, so a job should run on the replica that already holds its model (``Job.affinity``)
rather than on whichever worker asks first. The claiming worker says what it holds
(``Warmth``); the store knows what every other live worker holds (their reports). This
module is the rule itself, for one function's queue, shared by the SQLite store; the
Redis store applies the same rule inside its CLAIM script (redis_lua.py), and the
shared contract suite checks that both agree.

The rule, over a bounded window (``WINDOW``) of the function's ready jobs at its head
priority level, in claim order:

1. the first job that needs no keyed model, whose model this worker holds, or that is
   *overdue*: it has waited ``bound`` seconds since it became runnable. Overdue jobs
   are taken in this first pass (not after the warm ones) so the bound really bounds
   how long a job is passed over: once a job is overdue, the next free worker takes it
   ahead of anything queued behind it, and with ``bound == 0`` claims are plain FIFO.
2. else the first job whose model no other live worker holds (someone must load it);
3. else nothing: the function's jobs are left to the workers that hold their models.

Only the head priority level is looked at, so routing never breaks priority; and a
queue deeper than the window is routed on its first ``WINDOW`` jobs (a claim stays
cheap, whatever the depth). The window is in claim order, fair share's included (owners
take turns within a level, genq.store.sqlite_queues), and leaves out the jobs whose
owner runs its ``max_running`` jobs already: the head level is then the first level
with a job whose owner has room.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import NamedTuple

WINDOW = 256  # ready jobs of a function a routed claim looks at, at most


class Candidate(NamedTuple):
    """A ready job as routing sees it."""

    job_id: str
    affinity: str | None  # Job.affinity: the keyed model it needs, if any
    runnable_since: float  # created_at, or not_before for a retry waiting out its delay
    takes_now: bool = False  # taken whatever its model: a queue timeout to apply


def runnable_since(created_at: float, not_before: float) -> float:
    """When a job became claimable: a retry from the end of its delay."""
    return max(created_at, not_before)


def choose(candidates: Iterable[Candidate], holds: Collection[str],
           held_elsewhere: Callable[[str], bool], bound: float, now: float) -> str | None:
    """The job id a worker holding ``holds`` takes among ``candidates`` (the head
    priority level of one function, in claim order, already cut to the window), or
    None. ``held_elsewhere(affinity)``: another live worker holds that model."""
    fallback: str | None = None
    for c in candidates:
        if (c.takes_now or c.affinity is None or c.affinity in holds
                or now - c.runnable_since >= bound):
            return c.job_id
        if fallback is None and not held_elsewhere(c.affinity):
            fallback = c.job_id
    return fallback
