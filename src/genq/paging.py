"""Pages of job lists: newest first, ordered on the pair (created_at, id).

Jobs submitted in the same instant share a ``created_at``; paging on the time alone would
skip or repeat them at a page boundary. Every layer therefore pages on the pair: the
stores order by ``created_at`` then ``id`` (both descending) and a page starts strictly
below the pair of the previous page's last job.

The HTTP API's cursor (``next``, passed back as ``?before=``) is ``"<created_at>:<id>"``,
the time written with ``repr`` so it reads back exactly; a plain timestamp is still
accepted (jobs created strictly before it). The Python clients also take the last
``JobInfo`` of a page.
"""

from __future__ import annotations

import math

from genq.models import Job, JobInfo

Before = float | str | JobInfo | Job | None  # what the clients' list_jobs(before=) accepts


def cursor(job: Job | JobInfo) -> str:
    """The cursor of the page after ``job``."""
    return f"{job.created_at!r}:{job.id}"


def parse(text: str) -> tuple[float, str | None]:
    """``"<created_at>:<id>"`` or ``"<created_at>"`` -> (created_at, id or None).

    Raises ValueError naming what is wrong."""
    stamp, colon, job_id = text.partition(":")
    try:
        created_at = float(stamp)
    except ValueError:
        created_at = math.nan
    if not math.isfinite(created_at):
        raise ValueError("must be a timestamp or the 'next' cursor of a previous page")
    if colon and not job_id:
        raise ValueError("a cursor's job id after ':' is empty")
    return created_at, (job_id if colon else None)


def split(before: Before) -> tuple[float | None, str | None]:
    """What a client was given -> the store's (before, before_id)."""
    if before is None:
        return None, None
    if isinstance(before, (Job, JobInfo)):
        return before.created_at, before.id
    if isinstance(before, str):
        try:
            return parse(before)
        except ValueError as exc:
            raise ValueError(f"before {exc}") from None
    return float(before), None


def query_value(before: Before) -> str | None:
    """What a client was given -> the HTTP API's ``before`` parameter."""
    if before is None or isinstance(before, str):
        return before
    if isinstance(before, (Job, JobInfo)):
        return cursor(before)
    return repr(float(before))
