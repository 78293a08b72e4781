"""Shared plumbing for the engine benchmarks (not a benchmark itself).

Every measurement runs in a fresh child process (``script --child MODE ...``) that prints
one JSON line, so that no system inherits another's threads, heap or warm caches, and a
peer's background threads (huey's consumer polls) cannot steal CPU from the next run.
The parent runs the systems interleaved, round after round (A B C, A B C, ...), so that
slow phases of a noisy, shared 2-core machine hit every system alike; it reports the
median of the rounds and ratios of medians.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ChildResult = dict[str, Any]


def child_main(modes: dict[str, Callable[[list[str]], ChildResult]]) -> bool:
    """In a child process (``--child MODE args...``): run MODE, print its JSON, return True."""
    if len(sys.argv) < 3 or sys.argv[1] != "--child":
        return False
    mode, rest = sys.argv[2], sys.argv[3:]
    result = modes[mode](rest)
    print(json.dumps(result), flush=True)
    return True


def run_child(script: str, mode: str, args: Sequence[str] = (), timeout: float = 120.0
              ) -> ChildResult:
    proc = subprocess.run(
        [sys.executable, script, "--child", mode, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def scratch(prefix: str) -> Path:
    """A temporary directory for a child's database files, removed when the child exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def median_of(results: list[ChildResult], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


def machine_line() -> str:
    load = os.getloadavg()
    return (f"{_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} | {platform.node()} | "
            f"{os.cpu_count()} CPUs | load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | "
            f"Python {platform.python_version()} | SQLite {sqlite3.sqlite_version}")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                      enumerate(zip(row, widths, strict=True))) for row in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


class ThreadCPU:
    """CPU seconds used by each thread of this process between ``start`` and ``stop``
    (Linux /proc), to show where a run's CPU went: the event loop vs helper threads."""

    def __init__(self) -> None:
        self._t0: dict[int, float] = {}
        self.by_name: dict[str, float] = {}

    @staticmethod
    def _sample() -> dict[int, float]:
        out: dict[int, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
        return out

    def start(self) -> None:
        self._t0 = self._sample()

    def stop(self, label: Callable[[str], str]) -> dict[str, float]:
        """CPU seconds per label; ``label`` maps a thread's name (the main thread is
        always "main thread") to the group it is counted in."""
        t1 = self._sample()
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid, cpu in t1.items():
            used = cpu - self._t0.get(tid, 0.0)
            if used > 0:
                group = "main thread" if tid == os.getpid() else label(names.get(tid, ""))
                self.by_name[group] = self.by_name.get(group, 0.0) + used
        return self.by_name


def now() -> float:
    return time.perf_counter()
