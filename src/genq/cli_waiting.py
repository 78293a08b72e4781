"""Why a followed job is still queued, for ``genq run`` and ``genq watch``.

A job's events say when it was queued and when it started, but nothing in between: a
job waiting for a model to load (or for a failed setup's next try, or for any worker at
all) would sit silent for minutes. ``WaitNotes`` polls the job's view about once a
second while it is queued and hands each new reason (``JobInfo.waiting``) to ``say``
once: a new loading attempt or a new failure is a new note, the seconds ticking by are
not. It stops for good once the job started, so no note comes after ``started``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from genq import errors
from genq.client import Job
from genq.models import JobStatus

POLL_SECONDS = 1.0


class WaitNotes:
    """A thread polling ``job`` while it is queued; ``stop`` (idempotent) ends it."""

    def __init__(self, job: Job, say: Callable[[str], None],
                 interval: float = POLL_SECONDS) -> None:
        self._job = job
        self._say = say
        self._interval = interval
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # a note is said whole before stop() returns
        self._thread = threading.Thread(target=self._run, name="genq-wait-notes",
                                        daemon=True)

    def start(self) -> WaitNotes:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()

    def _run(self) -> None:
        said: tuple[object, object] | None = None
        while not self._stopped.is_set():
            try:
                info = self._job.info()
            except errors.GenqError:
                info = None  # the event stream reports a lost server; try again later
            if info is not None and info.status is not JobStatus.QUEUED:
                return
            waiting = None if info is None else info.waiting
            if waiting is not None and (waiting.get("reason"), waiting.get("since")) != said:
                said = waiting.get("reason"), waiting.get("since")
                with self._lock:
                    if self._stopped.is_set():
                        return
                    self._say(str(waiting.get("message")))
            self._stopped.wait(self._interval)
