"""Retention: how long finished jobs are kept, and how the window is written.

Every store deletes finished jobs (succeeded, failed, cancelled, expired; never queued or
running ones) whose ``finished_at`` is older than its ``retain`` window, with their
events, artifacts and every index, cache, idempotency and de-duplication entry that
points at them. The deletion runs from ``housekeep`` (every worker, once a second) in
batches of ``RETAIN_BATCH`` jobs, so a backlog of 100k expired jobs is worked off over a
few minutes instead of stalling a worker or holding SQLite's write lock for seconds.

Seven days by default: long enough to fetch results, replay a stream or debug last
week's failures, short enough that a busy server's store stops growing. ``0`` or
``forever`` keeps everything (the behaviour before retention existed).
"""

from __future__ import annotations

import math
import re

DEFAULT_RETAIN = 7 * 86400.0  # seconds
RETAIN_BATCH = 500  # finished jobs deleted per housekeep call

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_FOREVER = ("0", "forever", "never", "off", "none")


def parse_retain(text: str) -> float | None:
    """Seconds from ``30m``, ``12h``, ``7d``, ``2w`` or plain seconds (``3600``); None
    (keep forever) from ``0`` or ``forever``. Raises ValueError naming the forms."""
    value = text.strip().lower()
    if value in _FOREVER:
        return None
    match = _DURATION.fullmatch(value)
    seconds = None if match is None else float(match[1]) * _UNITS[match[2] or "s"]
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"retention {text!r} is not a duration: use e.g. 30m, 12h, 7d, "
                         "2w, a number of seconds, or 0 / forever to keep every job")
    return seconds or None


def describe_retain(seconds: float | None) -> str:
    """The window as people write it (``7d``), for logs."""
    if seconds is None:
        return "forever"
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"
