"""What is wrong with the SQLite store's file: what ``problem()`` says, and the errors
callers are refused with.

Two troubles reach a running server from outside genq:

* **A full disk.** A commit fails with SQLITE_FULL. The writer halts
  (``sqlite_writer.py``), the store undoes in memory what each refused write had
  changed, keeps the events it had already taken for a later write, and refuses new
  work with ``StorageFull`` (507) until a write commits again: the next submit, or the
  probe that housekeeping (and ``problem()``) make once a second. No restart.
* **A lost file.** The database file was deleted or replaced (moved aside, restored
  from a backup). SQLite goes on writing to the old file through its open descriptors,
  so every job acknowledged from then on would vanish at the next start. So the file's
  device and inode are noted at open and compared with what the path names now (one
  ``stat``: in housekeeping, in ``problem()``, and on submit at most every
  ``SUBMIT_CHECK_INTERVAL`` s, since a ``stat`` gives up the GIL and waits to get it
  back from the writer thread); once they differ, nothing more is accepted
  (``StoreLost``, 503) until ``genq serve`` is restarted.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path

from genq.errors import StorageFull, StoreLost

log = logging.getLogger("genq.store")

SUBMIT_CHECK_INTERVAL = 0.1  # seconds: a submit looks at the file if it was not this recently


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


class FileHealth:
    """The state of one store's file: full since when, lost how."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) at open
        self.full_since: float | None = None  # time.time() of the first refused commit
        self._lost: str | None = None  # what became of the file, once it did
        self._checked_at = -SUBMIT_CHECK_INTERVAL  # time.monotonic() of the last stat

    def opened(self) -> None:
        stat = os.stat(self.path)
        self._identity = (stat.st_dev, stat.st_ino)

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def check_file(self, max_age: float = 0.0) -> None:
        """Whether the path still names the file opened (one stat, unless the last was
        less than ``max_age`` s ago); says so once if not."""
        now = time.monotonic()
        if self._identity is None or self._lost is not None or now - self._checked_at < max_age:
            return
        self._checked_at = now
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            what = "deleted"
        else:
            if (stat.st_dev, stat.st_ino) == self._identity:
                return
            what = "replaced by another file"
        self._lost = f"{what} at {_when(time.time())}"
        log.warning("genq: the database file %s was %s while genq was using it; nothing "
                    "more is accepted (store_lost) until genq serve is restarted",
                    self.path, what)

    def disk_full(self) -> None:
        if self.full_since is None:
            self.full_since = time.time()
            log.warning("genq: the disk holding %s is full: submissions are refused "
                        "(507 storage_full) and running jobs' events wait in memory until "
                        "space is freed", self.path)

    def space_back(self) -> None:
        if self.full_since is not None:
            log.warning("genq: %s takes writes again, after %.1f s of full disk", self.path,
                        time.time() - self.full_since)
            self.full_since = None

    def problem(self, held_events: int) -> str | None:
        if self._lost is not None:
            return (f"database file {self.path} {self._lost}: nothing is accepted any more; "
                    "restart genq serve")
        if self.full_since is not None:
            return (f"disk full since {_when(self.full_since)}: writes to {self.path} fail, "
                    f"submissions are refused and {held_events} events wait in memory "
                    "until space is freed")
        return None

    def refusal(self) -> StoreLost | None:
        """The error every write is refused with before it is tried, once the file is lost."""
        if self._lost is None:
            return None
        return StoreLost(
            f"the database file {self.path} was {self._lost} while genq was running, so "
            "nothing is accepted any more (it would vanish at the next start); restart "
            "genq serve to open the file at that path", path=str(self.path))

    def full(self) -> StorageFull:
        return StorageFull(
            f"the disk holding the database {self.path} is full: nothing was accepted. "
            "Free space on it; genq takes work again by itself, without a restart",
            path=str(self.path))
